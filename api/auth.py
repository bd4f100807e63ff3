"""Bearer tokens with two scopes: `read`, and `ingest` (which may also read).

Tokens come from TRACER_API_TOKENS and are held only as sha256 digests. With no
tokens configured the API is open (and `tracer serve` says so loudly).
"""

from __future__ import annotations

import hmac

from flask import Flask, current_app, request
from flask.typing import ResponseReturnValue

from api.errors import error_response
from tracer.config import token_digest

OPEN_PATHS = ("/api/v1/health", "/api/v1/openapi.json", "/api/v1/docs")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def init_app(app: Flask) -> None:
    app.before_request(_check_token)


def _check_token() -> ResponseReturnValue | None:
    tokens = current_app.extensions["tracer"].config.api_tokens
    if not tokens or not request.path.startswith("/api/") or request.path.startswith(OPEN_PATHS):
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        response = error_response(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        response.headers["WWW-Authenticate"] = 'Bearer realm="tracer"'
        return response
    digest = token_digest(token.strip())
    scope = next((s for d, s in tokens.items() if hmac.compare_digest(d, digest)), None)
    if scope is None:
        return error_response(401, "unknown token")
    if request.method not in READ_METHODS and scope != "ingest":
        return error_response(
            403, f"a {scope!r} token cannot {request.method} here; it needs 'ingest'"
        )
    return None
