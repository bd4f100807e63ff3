"""A client's history across runs, jobs, pipelines, health."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint, abort
from sqlalchemy import text

from api.pages import with_next_url
from api.schemas import ErrorSchema as ERROR
from api.schemas import (
    HealthSchema,
    HistoryArgsSchema,
    HistoryPageSchema,
    JobSchema,
    ListArgsSchema,
    PipelineListSchema,
)
from api.state import connection, state
from tracer.queries.catalog import list_pipelines
from tracer.queries.journey import history

blp = Blueprint(
    "service", __name__, url_prefix="/api/v1", description="Clients, jobs, pipelines, health"
)


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


@blp.route("/jobs/<job_id>")
@blp.response(200, JobSchema)
@blp.alt_response(404, schema=ERROR, description="No such job (or its record expired)")
def get_job(job_id: str) -> dict[str, Any]:
    """A job's status: queued, started, deferred, finished or failed (with the error)."""
    job = state().dispatcher.status(job_id)
    if job is None:
        abort(404, message=f"job {job_id!r} not found")
    return job


@blp.route("/pipelines")
@blp.arguments(ListArgsSchema, location="query")
@blp.response(200, PipelineListSchema)
def get_pipelines(args: dict[str, Any]) -> dict[str, Any]:
    """Registered pipelines by name, with their key, stages and number of runs."""
    with connection() as conn:
        page = list_pipelines(conn, args["limit"], args.get("next"))
    return with_next_url(page)


@blp.route("/health")
@blp.response(200, HealthSchema)
@blp.alt_response(503, schema=HealthSchema, description="Postgres or Redis is unreachable")
def get_health() -> Any:
    """Checks Postgres and Redis; open to everyone (load balancers, compose healthchecks)."""
    s = state()
    report = {"ok": True, "postgres": "ok", "redis": "ok"}
    try:
        with s.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means unhealthy; the message says which
        report.update(ok=False, postgres=f"error: {exc.__class__.__name__}")
    try:
        report["redis"] = s.dispatcher.ping()
    except Exception as exc:
        report.update(ok=False, redis=f"error: {exc.__class__.__name__}")
    return report, (200 if report["ok"] else 503)
