"""A client's history: every run it appears in, across pipelines whose keys agree."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask_smorest import Blueprint
from marshmallow import INCLUDE

from api.json_body import json_response
from api.paging import with_next_url
from api.schemas import ErrorSchema as ERROR
from api.schemas import HistoryArgsSchema, HistoryPageSchema
from api.state import connection
from tracer.queries.journey import history

blp = Blueprint("history", __name__, url_prefix="/api/v1", description="A client across runs")

_PAGING = ("key", "pipeline", "limit", "next")


@blp.route("/history/<path:key>")
@blp.arguments(HistoryArgsSchema, location="query")
@blp.response(200, HistoryPageSchema)
@blp.alt_response(404, schema=ERROR, description="The client appears in no classified run")
def get_history(args: dict[str, Any], key: str) -> Response:
    """Every run this client appears in, newest first, with its final outcome there and the
    stage where it left. One-column keys; `/`, spaces and any character escaped."""
    return _history(args, [key], None)


@blp.route("/history")
@blp.arguments(HistoryArgsSchema, location="query", unknown=INCLUDE)
@blp.response(200, HistoryPageSchema)
@blp.alt_response(404, schema=ERROR, description="The client appears in no classified run")
def get_history_composite(args: dict[str, Any]) -> Response:
    """History of a key given by position (`?key=LIS&key=42`) or by column name
    (`?branch=LIS&client_no=42`: the runs whose key has exactly those columns)."""
    named = {name: value for name, value in args.items() if name not in _PAGING}
    return _history(args, args.get("key"), named)


def _history(args: dict[str, Any], key: list[str] | None, named: dict[str, Any] | None) -> Response:
    with connection() as conn:
        page = history(conn, key, args.get("pipeline"), args["limit"], args.get("next"), named)
    return json_response(with_next_url(page))
