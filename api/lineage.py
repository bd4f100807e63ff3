"""Lineage answers for one run: reconciliation, anomalies, gap keys, journeys.

Every list item carries the URL of its client's journey, every list streams as CSV
(`format=csv`, a header row always), and a key may be written by position or by name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlencode

from flask import Response, request, stream_with_context
from flask_smorest import Blueprint
from marshmallow import INCLUDE
from sqlalchemy import Connection

from api.json_body import json_response
from api.paging import with_next_url
from api.schemas import (
    AnomalyArgsSchema,
    AnomalyPageSchema,
    GapKeysArgsSchema,
    GapKeysPageSchema,
    JourneySchema,
    KeyArgsSchema,
    ReconciliationSchema,
    csv_alternative,
)
from api.schemas import ErrorSchema as ERROR
from api.state import connection
from tracer.queries.anomalies import anomalies, gap_keys
from tracer.queries.common import load_run
from tracer.queries.csv_lists import csv_chunks, every_page
from tracer.queries.journey import journey
from tracer.queries.pages import MAX_LIMIT
from tracer.queries.reconciliation import reconciliation

blp = Blueprint("lineage", __name__, url_prefix="/api/v1/runs", description="Where clients went")

CSV = csv_alternative("the whole list as CSV, a header row first (also when the list is empty)")


def absolute(path: str) -> str:
    """A path of this API as a URL a client can follow (as `next_url` is)."""
    return request.url_root.rstrip("/") + path


def journey_url(run_id: str, key: dict[str, Any]) -> str:
    """The client's journey: the path form for a one-column key (any character, escaped),
    the by-name query form for a composite one."""
    return journey_urls(run_id)(key)


def journey_urls(run_id: str) -> Callable[[dict[str, Any]], str]:
    """key -> `journey_url(run_id, key)`, the run's part built once (for long lists)."""
    base = absolute(f"/api/v1/runs/{quote(run_id, safe='')}/journeys")

    def url(key: dict[str, Any]) -> str:
        if len(key) == 1:
            (value,) = key.values()
            if type(value) is int:  # digits and '-': nothing to escape (and twice as fast)
                return f"{base}/{value}"
            return f"{base}/{quote(str(value), safe='')}"
        return f"{base}?{urlencode({c: str(v) for c, v in key.items()})}"

    return url


def with_journeys(page: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The page with `next_url`, each item with its `journey_url`."""
    url = journey_urls(run_id)
    items = [{**item, "journey_url": url(item["key"])} for item in page["items"]]
    return with_next_url({**page, "items": items})


def csv_response(
    kind: str,
    key_columns: list[str],
    fetch: Callable[[Connection, str | None], dict[str, Any]],
    name: str,
) -> Response:
    """Every page of a list, streamed as CSV; each page read in a connection of its own."""

    def fetched(token: str | None) -> dict[str, Any]:
        with connection() as conn:
            return fetch(conn, token)

    return csv_attachment(csv_chunks(kind, key_columns, every_page(fetched)), name)


def csv_attachment(chunks: Iterator[str], name: str) -> Response:
    """CSV text streamed as a download named `name`.csv."""
    return Response(
        stream_with_context(chunks),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{safe_name(name)}.csv"'},
    )


def safe_name(name: str) -> str:
    """A file name any browser takes: run ids and outcomes, other characters as `_`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def key_columns(run_id: str) -> list[str]:
    """The run's key columns (a CSV's header); fails with a JSON error before streaming."""
    with connection() as conn:
        return list(load_run(conn, run_id).key)


@blp.route("/<run_id>/reconciliation")
@blp.response(200, ReconciliationSchema)
@blp.alt_response(404, schema=ERROR, description="No such run")
def get_reconciliation(run_id: str) -> dict[str, Any]:
    """The run's reconciliation: what `tracer reconciliation --json` prints."""
    with connection() as conn:
        data = reconciliation(conn, run_id)
    if data["rerun"] is not None:
        data["rerun"] = {**data["rerun"], "url": absolute(data["rerun"]["url"])}
    return data


@blp.route("/<run_id>/anomalies")
@blp.arguments(AnomalyArgsSchema, location="query")
@blp.response(200, AnomalyPageSchema)
@blp.alt_response(200, success=True, **CSV)
@blp.alt_response(404, schema=ERROR, description="No such run")
def get_anomalies(args: dict[str, Any], run_id: str) -> Any:
    """Keys with an outcome (or grain violation) at a stage, each with its reasons there and
    its final outcome; keyset-paginated by `next`."""
    outcome, stage = args["outcome"], args.get("stage")
    if args["format"] == "csv":
        with connection() as conn:  # fail with a JSON error before streaming starts
            anomalies(conn, run_id, outcome, stage, limit=1)
        return csv_response(
            "anomalies",
            key_columns(run_id),
            lambda conn, token: anomalies(conn, run_id, outcome, stage, MAX_LIMIT, token),
            f"{run_id}-{outcome}",
        )
    with connection() as conn:
        page = anomalies(conn, run_id, outcome, stage, args["limit"], args.get("next"))
    return with_journeys(page, run_id)


@blp.route("/<run_id>/gap_cells/<cell>/keys")
@blp.arguments(GapKeysArgsSchema, location="query")
@blp.response(200, GapKeysPageSchema)
@blp.alt_response(200, success=True, **CSV)
@blp.alt_response(404, schema=ERROR, description="No such run")
def get_gap_keys(args: dict[str, Any], run_id: str, cell: str) -> Any:
    """The keys behind one cell of the gap (e.g. `lost`, `counted_twice`), each with its cause
    (stage and outcome), the reasons logged there and its final outcome; in cause order.
    `stage` and `outcome` keep one cause."""
    reporting, stage, outcome = args["reporting"], args.get("stage"), args.get("outcome")

    def fetch(conn: Any, token: str | None, limit: int = MAX_LIMIT) -> dict[str, Any]:
        return gap_keys(conn, run_id, cell, reporting, limit, token, stage, outcome)

    if args["format"] == "csv":
        with connection() as conn:
            fetch(conn, None, 1)
        return csv_response("gap_keys", key_columns(run_id), fetch, f"{run_id}-{cell}")
    with connection() as conn:
        page = fetch(conn, args.get("next"), args["limit"])
    return with_journeys(page, run_id)


@blp.route("/<run_id>/journeys/<path:key>")
@blp.response(200, JourneySchema)
@blp.alt_response(404, schema=ERROR, description="No such run, or the client has no record in it")
def get_journey(run_id: str, key: str) -> Response:
    """Where did this client go? One-column keys; `/`, spaces and any character escaped
    (see /journeys?key=... or ?column=value for composite ones)."""
    with connection() as conn:
        data = journey(conn, run_id, [key])
    return json_response(data)


@blp.route("/<run_id>/journeys")
@blp.arguments(KeyArgsSchema, location="query", unknown=INCLUDE)
@blp.response(200, JourneySchema)
@blp.alt_response(404, schema=ERROR, description="No such run, or the client has no record in it")
def get_journey_composite(args: dict[str, Any], run_id: str) -> Response:
    """Where did this client go? Key values in key-column order (`?key=LIS&key=42`), or each
    key column by name (`?branch=LIS&client_no=42`): the form that works for any key."""
    named = {name: value for name, value in args.items() if name != "key"}
    with connection() as conn:
        data = journey(conn, run_id, args.get("key"), named)
    return json_response(data)
