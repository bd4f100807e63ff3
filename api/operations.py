"""What operators get from the app: a log line per request, /metrics, and (in api.service)
/health. Registered by create_app in one call, once the app's State is in place."""

from __future__ import annotations

from flask import Flask

from api import metrics, request_log
from tracer import logs


def init_app(app: Flask) -> None:
    config = app.extensions["tracer"].config
    logs.ensure_handler(config.log_format, config.log_level)
    request_log.init_app(app, metrics.init_app(app))
