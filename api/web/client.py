"""A client's page: its journey through one run as a timeline, its final outcome in one
sentence, and its history across runs."""

from __future__ import annotations

from collections.abc import Sequence

from flask import abort, render_template, request
from flask.typing import ResponseReturnValue

from api.state import connection
from tracer.errors import TracerError
from tracer.queries.journey import history, journey

HISTORY = 50


def client(run_id: str, key: str) -> ResponseReturnValue:
    return _client(run_id, [key])


def client_by_values(run_id: str) -> ResponseReturnValue:
    """Composite keys (`?key=LIS&key=42`), in key-column order, as in the API."""
    values = request.args.getlist("key")
    if not values:
        abort(400, "name the client: ?key=VALUE, once per key column")
    return _client(run_id, values)


def _client(run_id: str, values: Sequence[str]) -> ResponseReturnValue:
    with connection() as conn:
        path = journey(conn, run_id, values)
        try:
            runs = history(conn, values, limit=HISTORY)
        except TracerError:  # only while this run is being republished
            runs = {"items": [], "next": None}
    return render_template(
        "client.html",
        run=path["run"],
        journey=path,
        history=runs["items"],
        more_history=runs["next"] is not None,
    )
