"""The pages: tracer's answers for people, in the browser, from the same Flask app.

Server-rendered Jinja2 templates (api/templates) over the same core queries as the API,
with a little JavaScript (api/static) for the flow diagram and the live ingestion status.
The pages are not API operations, so they stay out of the OpenAPI document: the
blueprint is a plain Flask one, registered on the app rather than on flask-smorest's Api.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue
from werkzeug import Response
from werkzeug.exceptions import HTTPException

from api.web import client, comparison, key_lists, links, run_list, run_page, tokens
from tracer.errors import TracerError

blp = Blueprint("web", __name__)

ROUTES: tuple[tuple[str, str, Any, tuple[str, ...]], ...] = (
    ("/", "runs", run_list.runs, ("GET",)),
    ("/search", "search", run_list.search, ("GET",)),
    ("/runs/<run_id>", "run", run_page.run, ("GET",)),
    ("/runs/<run_id>/status", "run_status", run_page.status, ("GET",)),
    ("/runs/<run_id>/anomalies", "anomalies", key_lists.anomalies, ("GET",)),
    ("/runs/<run_id>/anomalies.csv", "anomalies_csv", key_lists.anomalies_csv, ("GET",)),
    ("/runs/<run_id>/gaps/<cell>", "gap_keys", key_lists.gap_keys, ("GET",)),
    ("/runs/<run_id>/gaps/<cell>.csv", "gap_keys_csv", key_lists.gap_keys_csv, ("GET",)),
    ("/runs/<run_id>/clients/<key>", "client", client.client, ("GET",)),
    ("/runs/<run_id>/clients", "client_by_values", client.client_by_values, ("GET",)),
    ("/compare", "compare_form", comparison.compare_form, ("GET",)),
    ("/compare/<run_a>/<run_b>", "compare", comparison.compare, ("GET",)),
    ("/compare/<run_a>/<run_b>/keys", "compare_cell", comparison.compare_cell, ("GET",)),
    ("/login", "login", tokens.login, ("GET", "POST")),
    ("/logout", "logout", tokens.logout, ("POST",)),
)
for rule, endpoint, view, methods in ROUTES:
    blp.add_url_rule(rule, endpoint, view, methods=list(methods))

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@blp.before_request
def _signed_in() -> ResponseReturnValue | None:
    return tokens.require_token()


@blp.after_request
def _headers(response: Response) -> Response:
    """No script but our own files, no framing; client data is not kept in caches."""
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


@blp.context_processor
def _context() -> dict[str, Any]:
    return {**links.template_context(), **tokens.signed_in()}


@blp.errorhandler(TracerError)
def _tracer_error(error: TracerError) -> ResponseReturnValue:
    return render_template("error.html", status=error.status, message=error.message), error.status


@blp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> ResponseReturnValue:
    status = error.code or 500
    return render_template("error.html", status=status, message=error.description), status
