"""One error body everywhere: tracer's own errors, HTTP errors and validation errors alike.

{"ok": false, "status": 404, "error": "run 'x' not found", "errors": [...]}

Status codes, the team's convention: 400 a malformed request (unparseable body, bad query or
path parameter, forged pagination token), 401/403 auth, 404 no such run/client/job/pipeline
(or route), 405 with `Allow`, 409 a conflict with stored state, 413 body too large, 414 URI
too long, 415 unsupported media type, 422 a well-formed but invalid manifest or dataset
(ManifestError / IngestError), 431 headers too large. Under `/api/` every error, Werkzeug's
and the limits' (api/limits.py) included, has this body; gunicorn's own refusals too
(api/gunicorn_worker.py). The pages outside `/api/` answer their errors as an HTML page.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from flask_smorest import Api, Blueprint
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from api.schemas import ErrorSchema
from tracer.errors import TracerError

# A query parameter that fails its schema is a malformed request: 400, as for every other bad
# parameter (webargs says 422). Set on the parser all blueprints share, before any of them
# documents its arguments (api/__init__ imports this module first), so the document agrees.
Blueprint.ARGUMENTS_PARSER.DEFAULT_VALIDATION_STATUS = 400


def error_body(status: int, message: str, errors: list[str] | None = None) -> dict[str, Any]:
    """The only place an error body is built (api/limits.py sends it without Flask)."""
    return {"ok": False, "status": status, "error": message, "errors": errors or [message]}


def error_response(status: int, message: str, errors: list[str] | None = None) -> Response:
    response = jsonify(error_body(status, message, errors))
    response.status_code = status
    return response


def answer(status: int, message: str, errors: list[str] | None = None) -> Response:
    """The error as the caller reads it: the JSON body under /api/, a page elsewhere."""
    if request.path.startswith("/api/"):
        return error_response(status, message, errors)
    page = render_template("error.html", status=status, message=message)
    return Response(page, status=status, mimetype="text/html")


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
        """Every HTTPException (abort, routing's 404/405, Werkzeug's 413, a 500) in one body,
        with the exception's own headers (`Allow` of a 405)."""
        data = getattr(error, "data", None) or {}
        errors = _flatten(data.get("errors") or data.get("messages") or [])
        message = data.get("message") or ("; ".join(errors) if errors else _in_words(error))
        response = answer(error.code or 500, message, errors or None)
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        for name, value in (data.get("headers") or {}).items():
            response.headers[name] = value
        return response


def _in_words(error: HTTPException) -> str:
    """Routing's refusals said for this request; Werkzeug's own description otherwise."""
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        allowed = ", ".join(sorted(error.valid_methods))
        return f"{request.method} is not allowed on {request.path}: it answers {allowed}"
    if isinstance(error, NotFound) and request.path.startswith("/api/"):
        return f"no such resource: {request.path} (the API's paths: /api/v1/openapi.json)"
    return error.description or error.name


def register(app: Flask) -> None:
    app.register_error_handler(TracerError, lambda e: answer(e.status, e.message, e.errors))
