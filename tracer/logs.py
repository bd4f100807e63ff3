"""Log output of the long-running processes (`tracer serve`, `tracer worker`), set up here only.

One line per event on stderr: JSON by default, so a log pipeline can filter on fields
(`route`, `status`, `run_id`, `token`, `outcome`...) without parsing prose; `text` for a
person at a terminal. Either way the message itself is a complete sentence, so the text
format loses no meaning, only the fields. The one-shot CLI commands never call this: their
output is for people and stays as it is.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def formatter(fmt: str = "json") -> logging.Formatter:
    """The formatter of `json` or `text` lines."""
    if fmt == "json":
        return JsonFormatter(
            "{levelname}{name}{process}{message}",
            style="{",
            timestamp="time",  # ISO 8601 in UTC, from the record's creation time
            rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
        )
    return logging.Formatter(TEXT_FORMAT)


def dict_config(fmt: str = "json", level: str = "INFO") -> dict[str, Any]:
    """The whole configuration: one stderr handler on the root logger.

    gunicorn's own loggers are routed through it too (`api.gunicorn_conf`), and its access
    log is dropped: the API writes its own line per request, with the route and the token.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"tracer": {"()": "tracer.logs.formatter", "fmt": fmt}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "tracer",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
    }


def configure(fmt: str = "json", level: str = "INFO") -> None:
    """Configure logging for this process (and the processes it forks)."""
    logging.config.dictConfig(dict_config(fmt, level))


def ensure_handler(fmt: str = "json", level: str = "INFO") -> None:
    """Where nothing configured logging (the app served by some other WSGI server), the
    `tracer` loggers (requests, jobs, audit) still reach stderr; elsewhere that setup decides."""
    tracer = logging.getLogger("tracer")
    if tracer.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    tracer.addHandler(handler)
    tracer.setLevel(level)
