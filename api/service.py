"""Jobs, pipelines, health."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint, abort
from sqlalchemy import text

from api.paging import with_next_url
from api.schemas import ErrorSchema as ERROR
from api.schemas import HealthSchema, JobSchema, ListArgsSchema, PipelineListSchema
from api.state import connection, state
from tracer.pipelines import list_pipelines

blp = Blueprint("service", __name__, url_prefix="/api/v1", description="Jobs, pipelines, health")


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
