"""Jobs, pipelines (and their versions), health."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask_smorest import Blueprint, abort

from api.health import HealthSchema, health
from api.paging import with_next_url
from api.pipeline_schemas import PipelineDetailSchema, PipelinePageSchema, VersionRunPageSchema
from api.schemas import ErrorSchema as ERROR
from api.schemas import JobSchema, ListArgsSchema
from api.state import connection, state
from tracer.pipelines import delete_pipeline, list_pipelines, pipeline_detail, version_runs

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
@blp.response(200, PipelinePageSchema)
def get_pipelines(args: dict[str, Any]) -> dict[str, Any]:
    """Registered pipelines by name: the latest version's key and stages, and their runs."""
    with connection() as conn:
        page = list_pipelines(conn, args["limit"], args.get("next"))
    return with_next_url(page)


@blp.route("/pipelines/<name>")
@blp.response(200, PipelineDetailSchema)
@blp.alt_response(404, schema=ERROR, description="No such pipeline")
def get_pipeline(name: str) -> dict[str, Any]:
    """A pipeline's versions, oldest first: each definition and the runs classified with it."""
    with connection() as conn:
        detail = pipeline_detail(conn, name)
    for v in detail["versions"]:
        v["runs_url"] = url_for(
            "service.get_version_runs", name=name, version=v["version"], _external=True
        )
    return detail


@blp.route("/pipelines/<name>", methods=["DELETE"])
@blp.response(204)
@blp.alt_response(403, schema=ERROR, description="The token's scope is not `admin`")
@blp.alt_response(404, schema=ERROR, description="No such pipeline")
@blp.alt_response(
    409, schema=ERROR, description="Runs still use the pipeline: the error names them"
)
def remove_pipeline(name: str) -> None:
    """Delete a pipeline and all its versions, once no run uses it (admin scope)."""
    delete_pipeline(state().engine, name)


@blp.route("/pipelines/<name>/versions/<int:version>/runs")
@blp.arguments(ListArgsSchema, location="query")
@blp.response(200, VersionRunPageSchema)
@blp.alt_response(404, schema=ERROR, description="No such pipeline or version")
def get_version_runs(args: dict[str, Any], name: str, version: int) -> dict[str, Any]:
    """The runs classified with one version of the pipeline, newest first, keyset pages."""
    with connection() as conn:
        page = version_runs(conn, name, version, args["limit"], args.get("next"))
    return with_next_url(page)


@blp.route("/health")
@blp.response(200, HealthSchema)
@blp.alt_response(503, schema=HealthSchema, description="Postgres, or a configured Redis, is down")
def get_health() -> Any:
    """Postgres (latency, schema revision), Redis and the job queue's backlog and workers.

    503 with the same body when Postgres, or Redis when configured, does not answer within
    about 2 s. Open to everyone (load balancers, compose healthchecks): it shows no data.
    """
    report = health()
    return report, (200 if report["ok"] else 503)
