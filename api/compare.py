"""Comparing runs (a run and its rerun, two marketing solutions), and `latest`: the newest
classified run of a pipeline, as a run id every run resource accepts."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask import redirect, request
from flask_smorest import Blueprint

from api.lineage import csv_response, journey_url
from api.paging import with_next_url
from api.schemas import (
    CompareKeysArgsSchema,
    CompareKeysPageSchema,
    ComparisonSchema,
    RunDetailSchema,
    csv_alternative,
)
from api.schemas import ErrorSchema as ERROR
from api.state import connection
from tracer.queries.catalog import latest_run, run_detail
from tracer.queries.compare import ABSENT, compare, compare_keys, pair
from tracer.queries.pages import MAX_LIMIT

blp = Blueprint(
    "compare", __name__, url_prefix="/api/v1", description="Comparing runs; a pipeline's latest"
)

REFUSED = "No such run, or runs of different pipelines or keys (400)"


@blp.route("/runs/<run_a>/compare/<run_b>")
@blp.response(200, ComparisonSchema)
@blp.alt_response(400, schema=ERROR, description="Runs of different pipelines or keys")
@blp.alt_response(404, schema=ERROR, description="No such run")
def get_comparison(run_a: str, run_b: str) -> dict[str, Any]:
    """Compare two runs of one pipeline: the matrix of final outcomes (A by B, `absent` where a
    key is in one run only), the change per stage and outcome, and where changed keys first
    differ. Computed once from the stored keys, then kept while neither run changes."""
    with connection() as conn:
        return compare(conn, run_a, run_b)


@blp.route("/runs/<run_a>/compare/<run_b>/keys")
@blp.arguments(CompareKeysArgsSchema, location="query")
@blp.response(200, CompareKeysPageSchema)
@blp.alt_response(200, success=True, **csv_alternative("the whole cell as CSV, a header row first"))
@blp.alt_response(400, schema=ERROR, description="Runs of different pipelines or keys")
@blp.alt_response(404, schema=ERROR, description="No such run")
def get_compare_keys(args: dict[str, Any], run_a: str, run_b: str) -> Any:
    """The keys of one cell of the matrix (`a`: final outcome in run A, `b` in run B), in key
    order, each with the first stage where it differs and its journey in each run."""
    a, b = args["a"], args["b"]

    def fetch(conn: Any, token: str | None, limit: int = MAX_LIMIT) -> dict[str, Any]:
        return compare_keys(conn, run_a, run_b, a, b, limit, token)

    if args["format"] == "csv":
        with connection() as conn:  # refuse before streaming starts
            key = list(pair(conn, run_a, run_b).a.key)
            fetch(conn, None, 1)
        return csv_response("compare_keys", key, fetch, f"{run_a}-vs-{run_b}-{a}-{b}")
    with connection() as conn:
        page = fetch(conn, args.get("next"), args["limit"])
    items = [
        {
            **item,
            "journey_urls": {
                "a": journey_url(run_a, item["key"]) if a != ABSENT else None,
                "b": journey_url(run_b, item["key"]) if b != ABSENT else None,
            },
        }
        for item in page["items"]
    ]
    return with_next_url({**page, "items": items})


@blp.route("/pipelines/<name>/runs/latest")
@blp.response(200, RunDetailSchema)
@blp.alt_response(404, schema=ERROR, description="No such pipeline, or no classified run of it")
def get_latest(name: str) -> dict[str, Any]:
    """The pipeline's newest classified run (what GET /runs/{run_id} answers for it)."""
    with connection() as conn:
        return run_detail(conn, latest_run(conn, name))


@blp.route("/pipelines/<name>/runs/latest/<path:rest>")
@blp.response(307, description="Redirected to the same resource of the latest run")
@blp.alt_response(404, schema=ERROR, description="No such pipeline, or no classified run of it")
def get_latest_resource(name: str, rest: str) -> Any:
    """Any resource of the pipeline's newest classified run (`.../latest/reconciliation`,
    `.../latest/journeys/42`, ...): a redirect to it under /runs/{run_id}, query kept."""
    with connection() as conn:
        run_id = latest_run(conn, name)
    target = f"/api/v1/runs/{quote(run_id, safe='')}/{quote(rest)}"
    query = request.query_string.decode()
    return redirect(target + (f"?{query}" if query else ""), code=307)
