"""One error body everywhere: tracer's own errors, HTTP errors and validation errors alike.

{"ok": false, "status": 404, "error": "run 'x' not found", "errors": [...]}
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from api.schemas import ErrorSchema
from tracer.errors import TracerError


def error_response(status: int, message: str, errors: list[str] | None = None) -> Response:
    """The only place an error body is built."""
    response = jsonify(
        {"ok": False, "status": status, "error": message, "errors": errors or [message]}
    )
    response.status_code = status
    return response


def _flatten(messages: Any, prefix: str = "") -> list[str]:
    """webargs/marshmallow {"query": {"limit": ["Too big"]}} -> ["query.limit: Too big"]."""
    if isinstance(messages, dict):
        out: list[str] = []
        for field, inner in messages.items():
            out += _flatten(inner, f"{prefix}.{field}" if prefix else str(field))
        return out
    if isinstance(messages, list | tuple):
        return [m for item in messages for m in _flatten(item, prefix)]
    return [f"{prefix}: {messages}" if prefix else str(messages)]


class TracerApi(Api):
    """flask-smorest's Api with tracer's error body, documented as the `Error` schema."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException) -> Response:  # type: ignore[override]
        data = getattr(error, "data", None) or {}
        errors = _flatten(data.get("errors") or data.get("messages") or [])
        message = data.get("message") or (error.description if errors == [] else "invalid request")
        response = error_response(error.code or 500, message, errors or None)
        for name, value in (data.get("headers") or {}).items():
            response.headers[name] = value
        return response


def register(app: Any) -> None:
    app.register_error_handler(TracerError, lambda e: error_response(e.status, e.message, e.errors))
