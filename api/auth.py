"""Bearer tokens with three scopes: `read`; `ingest` (may also read); `admin` (may also ingest,
and alone may DELETE, since a deletion cannot be undone).

Tokens come from TRACER_API_TOKENS and are held only as sha256 digests, each with a name
(`flask.g.token`) so that logs say who did what without showing a secret. Every DELETE is
written to the `tracer.audit` logger. With no tokens configured the API is open (and
`tracer serve` says so loudly).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask.typing import ResponseReturnValue

from api.errors import error_response
from tracer.config import ApiToken, token_digest

OPEN_PATHS = ("/api/v1/health", "/api/v1/openapi.json", "/api/v1/docs")
GUARDED_PATHS = ("/metrics",)
"""Outside /api/ but guarded like it (a `read` token): route names and counts are data."""
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
AUDIT = logging.getLogger("tracer.audit")


def init_app(app: Flask) -> None:
    app.before_request(_check_token)
    app.after_request(_audit)  # api.operations makes sure its lines reach stderr


def needed_scope(method: str, view: Callable[..., Any] | None = None) -> str:
    """Reading needs `read` (so does a POST marked `read_only`), deleting `admin`, any other
    write `ingest`. The one rule both the check and the OpenAPI document follow."""
    if method in READ_METHODS or getattr(view, "tracer_read_only", False):
        return "read"
    return "admin" if method == "DELETE" else "ingest"


def read_only(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a POST that only reads (a batch lookup, whose keys would not fit a URL): it
    needs `read`, like any lookup. The mark survives the decorators above it (functools.wraps
    copies it)."""
    view.tracer_read_only = True  # type: ignore[attr-defined]
    return view


def token_name() -> str:
    """Who is calling, as logs show it: the token's name, never its secret."""
    token: ApiToken | None = g.get("token")
    if token is not None:
        return token.name
    return "anonymous (no tokens configured)" if not _tokens() else "unauthenticated"


def _tokens() -> dict[str, ApiToken]:
    return current_app.extensions["tracer"].config.api_tokens


def _check_token() -> ResponseReturnValue | None:
    g.token = None
    tokens = _tokens()
    guarded = request.path.startswith("/api/") or request.path in GUARDED_PATHS
    if not tokens or not guarded or request.path.startswith(OPEN_PATHS):
        return None
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret:
        response = error_response(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        response.headers["WWW-Authenticate"] = 'Bearer realm="tracer"'
        return response
    digest = token_digest(secret.strip())
    token = next((t for d, t in tokens.items() if hmac.compare_digest(d, digest)), None)
    if token is None:
        return error_response(401, "unknown token")
    g.token = token
    needed = needed_scope(request.method, current_app.view_functions.get(request.endpoint or ""))
    if not token.allows(needed):
        response = error_response(
            403,
            f"token {token.name!r} has scope {token.scope!r}: {request.method} here needs "
            f"{needed!r}",
        )
        response.headers["WWW-Authenticate"] = (
            f'Bearer realm="tracer", error="insufficient_scope", scope="{needed}"'
        )
        return response
    return None


def _audit(response: Response) -> Response:
    """One line per DELETE, done or refused, naming the token."""
    if request.method == "DELETE" and request.path.startswith("/api/"):
        token: ApiToken | None = g.get("token")
        scope = f" ({token.scope})" if token else ""
        level = logging.INFO if response.status_code < 400 else logging.WARNING
        AUDIT.log(
            level,
            "token %r%s: DELETE %s -> %s from %s",
            token_name(),
            scope,
            request.path,
            response.status_code,
            request.remote_addr,
            extra={
                "event": "delete",
                "token": token_name(),
                "scope": token.scope if token else None,
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "remote_addr": request.remote_addr,
            },
        )
    return response
