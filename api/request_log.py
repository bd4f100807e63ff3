"""One log line and one set of metrics per request, and a request id to match them up.

The id comes from the caller's `X-Request-ID` when it is short and printable (a proxy or a
client that already tagged the request), otherwise a new one; either way the response
carries it back. Routes are logged and counted by their template (`/api/v1/runs/<run_id>`),
so a metric has one series per route and not one per run; a path that matches no route
is `<unmatched>`.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from flask import Flask, Response, g, request

from api.auth import token_name
from api.metrics import HttpMetrics

HEADER = "X-Request-ID"
VALID_ID = re.compile(r"[\x21-\x7e]{1,128}")
"""1-128 visible ASCII characters: anything else (spaces, control or non-ASCII characters,
a kilobyte of junk) could forge or break a log line, so it is replaced by a new id."""
UNMATCHED = "<unmatched>"
log = logging.getLogger("tracer.request")


def init_app(app: Flask, metrics: HttpMetrics) -> None:
    # First of the before-request functions: one that answers early (a refused token)
    # skips the rest, and the request must still be timed and logged.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)

    def finish(response: Response) -> Response:
        return _finish(response, metrics)

    app.after_request(finish)


def request_id() -> str:
    """This request's id (as logged and as sent back)."""
    return str(g.get("request_id") or "-")


def _start() -> None:
    g.request_started = time.perf_counter()
    given = request.headers.get(HEADER, "")
    g.request_id = given if VALID_ID.fullmatch(given) else uuid.uuid4().hex


def _finish(response: Response, metrics: HttpMetrics) -> Response:
    seconds = time.perf_counter() - g.get("request_started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule is not None else UNMATCHED
    args = request.view_args or {}
    line: dict[str, Any] = {
        "request_id": request_id(),
        "method": request.method,
        "route": route,
        "path": request.path,
        "status": response.status_code,
        "duration_ms": round(seconds * 1000, 2),
        "run_id": args.get("run_id") or args.get("run_a"),
        "token": token_name(),
        "remote_addr": request.remote_addr,
    }
    response.headers[HEADER] = line["request_id"]
    metrics.observe(request.method, route, response.status_code, seconds)
    log.log(
        logging.WARNING if response.status_code >= 500 else logging.INFO,
        "%s %s -> %s in %.1f ms (token %s, request %s)",
        request.method, request.path, response.status_code, line["duration_ms"],
        line["token"], line["request_id"],
        extra=line,
    )  # fmt: skip
    return response
