"""Lineage answers for one run: reconciliation, anomalies, gap keys, journeys, comparison."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from flask import Response, stream_with_context
from flask_smorest import Blueprint

from api.errors import error_response
from api.paging import with_next_url
from api.schemas import (
    AnomalyArgsSchema,
    AnomalyPageSchema,
    GapKeysArgsSchema,
    GapKeysPageSchema,
    JourneySchema,
    KeyArgsSchema,
    ReconciliationSchema,
)
from api.schemas import ErrorSchema as ERROR
from api.state import connection
from tracer.queries.anomalies import anomalies, gap_keys
from tracer.queries.journey import journey
from tracer.queries.pages import MAX_LIMIT
from tracer.queries.reconciliation import reconciliation

blp = Blueprint("lineage", __name__, url_prefix="/api/v1/runs", description="Where clients went")


@blp.route("/<run_id>/reconciliation")
@blp.response(200, ReconciliationSchema)
@blp.alt_response(404, schema=ERROR, description="No such run")
def get_reconciliation(run_id: str) -> dict[str, Any]:
    """The run's reconciliation: what `tracer reconciliation --json` prints."""
    with connection() as conn:
        return reconciliation(conn, run_id)


@blp.route("/<run_id>/anomalies")
@blp.arguments(AnomalyArgsSchema, location="query")
@blp.response(200, AnomalyPageSchema)
@blp.alt_response(
    200,
    success=True,
    description="With format=csv: the whole list as CSV (stage, key columns..., rows)",
    content_type="text/csv",
    schema={"type": "string"},
)
@blp.alt_response(404, schema=ERROR, description="No such run")
def get_anomalies(args: dict[str, Any], run_id: str) -> Any:
    """Keys with an outcome (or grain violation) at a stage, keyset-paginated by `next`."""
    if args["format"] == "csv":
        with connection() as conn:  # fail with a JSON error before streaming starts
            first = anomalies(conn, run_id, args["outcome"], args.get("stage"), limit=1)
        return Response(
            stream_with_context(_csv(run_id, args["outcome"], args.get("stage"), first)),
            mimetype="text/csv",
            headers={
                "Content-Disposition": f'attachment; filename="{run_id}-{args["outcome"]}.csv"'
            },
        )
    with connection() as conn:
        page = anomalies(
            conn, run_id, args["outcome"], args.get("stage"), args["limit"], args.get("next")
        )
    return with_next_url(page)


def _csv(run_id: str, outcome: str, stage: str | None, first: dict[str, Any]) -> Iterator[str]:
    buffer = io.StringIO()
    out = csv.writer(buffer)
    key_columns: list[str] | None = None
    token = None
    while True:
        with connection() as conn:
            page = anomalies(conn, run_id, outcome, stage, MAX_LIMIT, token)
        for item in page["items"]:
            if key_columns is None:
                key_columns = list(item["key"])
                out.writerow(
                    ["stage", *key_columns, "rows_in", "rows_out", "rows_dropped", "extra_rows"]
                )
            out.writerow([item["stage"], *item["key"].values(), item["rows_in"], item["rows_out"],
                          item["rows_dropped"], item["extra_rows"]])  # fmt: skip
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if (token := page["next"]) is None:
            return


@blp.route("/<run_id>/gap_cells/<cell>/keys")
@blp.arguments(GapKeysArgsSchema, location="query")
@blp.response(200, GapKeysPageSchema)
@blp.alt_response(404, schema=ERROR, description="No such run")
def get_gap_keys(args: dict[str, Any], run_id: str, cell: str) -> dict[str, Any]:
    """The keys behind one cell of the gap (e.g. `lost`, `counted_twice`)."""
    with connection() as conn:
        page = gap_keys(conn, run_id, cell, args["reporting"], args["limit"], args.get("next"))
    return with_next_url(page)


@blp.route("/<run_id>/journeys/<key>")
@blp.response(200, JourneySchema)
@blp.alt_response(404, schema=ERROR, description="No such run, or the client has no record in it")
def get_journey(run_id: str, key: str) -> dict[str, Any]:
    """Where did this client go? (single-column keys; see /journeys?key=... for composite ones)"""
    with connection() as conn:
        return journey(conn, run_id, [key])


@blp.route("/<run_id>/journeys")
@blp.arguments(KeyArgsSchema, location="query")
@blp.response(200, JourneySchema)
@blp.alt_response(404, schema=ERROR, description="No such run, or the client has no record in it")
def get_journey_composite(args: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Where did this client go? Key values in key-column order: `?key=LIS&key=42`."""
    with connection() as conn:
        return journey(conn, run_id, args["key"])


@blp.route("/<run_a>/compare/<run_b>")
@blp.response(501, ERROR, description="Not implemented yet: run comparison is planned")
def compare(run_a: str, run_b: str) -> Any:
    """Compare two runs stage by stage and key by key (not built yet: answers 501)."""
    return error_response(501, f"comparing runs ({run_a} vs {run_b}) is not implemented yet")
