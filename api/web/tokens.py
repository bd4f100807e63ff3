"""The pages' side of the API's tokens: a token entered once, then kept in a cookie.

A browser cannot send `Authorization: Bearer` on a link, so the pages ask for one of
TRACER_API_TOKENS (any scope reads) on a sign-in form and keep it in a cookie that
scripts cannot read (HttpOnly), that other sites' forms and frames do not get
(SameSite=Lax) and that only travels over HTTPS when the page came over HTTPS. With no
tokens configured the pages are open, like the API.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug import Response

from api.state import state
from tracer.config import token_digest

COOKIE = "tracer_token"
OPEN_ENDPOINTS = frozenset({"web.login", "web.logout"})


def _tokens() -> Mapping[str, Any]:
    return state().config.api_tokens


def _token(secret: str) -> Any | None:
    """The configured token (its scope and name) whose digest matches, or None."""
    digest = token_digest(secret.strip())
    return next((t for d, t in _tokens().items() if hmac.compare_digest(d, digest)), None)


def signed_in() -> dict[str, Any]:
    """For the page header: whether tokens are on, and the name of the one in use."""
    if not _tokens():
        return {"tokens": False, "signed_in": False, "token_name": None}
    token = _token(request.cookies.get(COOKIE, ""))
    return {
        "tokens": True,
        "signed_in": token is not None,
        "token_name": getattr(token, "name", None),  # tokens have names since the admin scope
    }


def require_token() -> ResponseReturnValue | None:
    """Before every page: open without tokens; else a known token in the cookie, or sign in."""
    if not _tokens() or request.endpoint in OPEN_ENDPOINTS:
        return None
    secret = request.cookies.get(COOKIE)
    if secret and _token(secret) is not None:
        return None
    response = redirect(url_for("web.login", next=request.full_path.rstrip("?")))
    if secret:  # a token since removed from the configuration
        response.delete_cookie(COOKIE, path="/")
    return response


def _safe_next(target: str | None) -> str:
    """Only a path on this server: never an open redirect to another site."""
    if not target:
        return url_for("web.runs")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("web.runs")
    if "\\" in target or any(ord(c) < 32 for c in target):  # browsers read "/\x" as "//x"
        return url_for("web.runs")
    return target


def login() -> ResponseReturnValue:
    """The sign-in form; on a known token, the cookie and back to the page asked for."""
    target = _safe_next(request.values.get("next"))
    if not _tokens():
        return redirect(target)
    error = None
    if request.method == "POST":
        secret = request.form.get("token", "").strip()
        if secret and _token(secret) is not None:
            response = redirect(target)
            response.set_cookie(
                COOKIE, secret, httponly=True, samesite="Lax", secure=request.is_secure, path="/"
            )
            return response
        error = "That is not one of this server's tokens."
    return render_template("login.html", error=error, next=target)


def logout() -> Response:
    """Forget the token (a POST, so a link elsewhere cannot sign anyone out)."""
    response = redirect(url_for("web.login"))
    response.delete_cookie(COOKIE, path="/")
    return response
