"""A client's history: every run it appears in, across pipelines whose keys agree."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from api.paging import with_next_url
from api.schemas import ErrorSchema as ERROR
from api.schemas import HistoryArgsSchema, HistoryPageSchema
from api.state import connection
from tracer.queries.journey import history

blp = Blueprint("history", __name__, url_prefix="/api/v1", description="A client across runs")


@blp.route("/history/<key>")
@blp.arguments(HistoryArgsSchema(partial=("key",)), location="query")
@blp.response(200, HistoryPageSchema)
@blp.alt_response(404, schema=ERROR, description="The client appears in no classified run")
def get_history(args: dict[str, Any], key: str) -> dict[str, Any]:
    """Every run this client appears in, newest first, with its final outcome there."""
    return _history([key], args)


@blp.route("/history")
@blp.arguments(HistoryArgsSchema, location="query")
@blp.response(200, HistoryPageSchema)
@blp.alt_response(404, schema=ERROR, description="The client appears in no classified run")
def get_history_composite(args: dict[str, Any]) -> dict[str, Any]:
    """History of a composite key: `?key=LIS&key=42`."""
    return _history(args["key"], args)


def _history(key: list[str], args: dict[str, Any]) -> dict[str, Any]:
    with connection() as conn:
        page = history(conn, key, args.get("pipeline"), args["limit"], args.get("next"))
    return with_next_url(page)
