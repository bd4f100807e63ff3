"""Runs: submit a manifest, list and inspect runs, delete one."""

from __future__ import annotations

from typing import Any

import yaml
from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import Connection

from api.bodies import YAML_TYPES, TooDeep
from api.lineage import CSV, csv_response
from api.paging import with_next_url
from api.schemas import ErrorSchema as ERROR
from api.schemas import RunCreatedSchema, RunDetailSchema, RunListArgsSchema, RunListSchema
from api.state import connection, state
from tracer.bounded_yaml import NestedTooDeep, load_yaml, yaml_problem
from tracer.errors import ManifestError, TracerError
from tracer.manifest import ManifestSpec, parse_manifest
from tracer.model import RunStatus
from tracer.pipelines import pipeline_lookup
from tracer.queries.catalog import list_runs, run_detail
from tracer.queries.pages import MAX_PAGE
from tracer.store import delete_run, submit_run

blp = Blueprint("runs", __name__, url_prefix="/api/v1/runs", description="Pipeline runs")

MANIFEST_BODY = {
    "required": True,
    "description": "A run manifest (see the README): JSON, or YAML with a YAML content type. "
    "Paths must lie under the server's data roots; relative paths are taken from the first.",
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Manifest"}},
        "application/yaml": {"schema": {"$ref": "#/components/schemas/Manifest"}},
    },
}


def _manifest_body() -> dict[str, Any]:
    """The posted manifest as a mapping: 415 for another media type, 400 for a body that
    cannot be parsed, 422 (ManifestError) for one that parses but is no manifest.

    api/limits.py has already refused a JSON body too large or too deep; YAML is composed
    by a loader that stops at the same depth, and its aliases stay shared objects until
    parse_manifest's bounded walk refuses a bomb (the NUL search is bounded alike)."""
    mimetype = request.mimetype
    limits = state().config.limits
    if mimetype in YAML_TYPES:
        try:
            body = load_yaml(request.get_data(as_text=True), limits.depth)
        except NestedTooDeep as exc:
            raise TooDeep(limits.depth, exc.where) from None
        except yaml.YAMLError as exc:
            raise TracerError(f"request body is not valid YAML{yaml_problem(exc)}") from None
    elif mimetype == "application/json":
        body = request.get_json(silent=True)
        if body is None:
            raise TracerError("request body is not valid JSON")
    else:
        abort(
            415,
            message=f"send the manifest as application/json or application/yaml, not "
            f"{mimetype or 'a body without a Content-Type'}",
        )
    if not isinstance(body, dict):
        raise ManifestError("a manifest is a mapping with 'pipeline' and 'run'")
    return body


@blp.route("")
class Runs(MethodView):
    @blp.arguments(RunListArgsSchema, location="query")
    @blp.response(200, RunListSchema)
    @blp.alt_response(200, success=True, **CSV)
    def get(self, args: dict[str, Any]) -> Any:
        """List runs with their headline figures (entered, targeted, traced, gaps, keys per
        anomaly outcome, failed conditions), newest first or `sort=distance` (furthest from
        reconciling first); filter by pipeline, label, status, reconciles, since, until."""

        def fetch(conn: Connection, token: str | None, limit: int = MAX_PAGE) -> dict[str, Any]:
            return list_runs(
                conn, args.get("pipeline"), args.get("label"), args.get("status"), limit, token,
                args.get("reconciles"), args.get("since"), args.get("until"), args["sort"],
            )  # fmt: skip

        if args["format"] == "csv":
            with connection() as conn:  # a bad filter fails as JSON before streaming
                fetch(conn, None, 1)
            return csv_response("runs", [], fetch, "runs")
        with connection() as conn:
            page = fetch(conn, args.get("next"), args["limit"])
        return with_next_url(page)

    @blp.doc(requestBody=MANIFEST_BODY)
    @blp.response(202, RunCreatedSchema)
    @blp.alt_response(
        422,
        schema=ERROR,
        description="The manifest is invalid or names paths outside the data roots: `errors` "
        "names every field at fault",
    )
    def post(self) -> dict[str, Any]:
        """Submit a run manifest: validated now, then ingested and classified by the workers."""
        s = state()
        manifest = parse_manifest(
            _manifest_body(),
            base_dir=s.config.roots[0],
            source="manifest",
            lookup=pipeline_lookup(s.engine),
            roots=s.config.roots,
        )
        submitted = submit_run(s.engine, manifest)
        job_ids = s.dispatcher.submit(submitted)
        return {
            "run_id": submitted.run_id,
            "status": RunStatus.QUEUED,
            "job_ids": job_ids.as_dict(),
        }


@blp.route("/<run_id>")
class RunDetail(MethodView):
    @blp.response(200, RunDetailSchema)
    @blp.alt_response(404, schema=ERROR, description="No such run")
    def get(self, run_id: str) -> dict[str, Any]:
        """A run: its status, each dataset's status, and its totals once classified."""
        with connection() as conn:
            return run_detail(conn, run_id)

    @blp.response(204)
    @blp.alt_response(404, schema=ERROR, description="No such run")
    def delete(self, run_id: str) -> None:
        """Delete a run and everything derived from it (its partitions are dropped)."""
        delete_run(state().engine, run_id)


def manifest_schema() -> dict[str, Any]:
    """The manifest's JSON Schema, from the same pydantic models that validate it."""
    return ManifestSpec.model_json_schema(ref_template="#/components/schemas/{model}")


def manifest_components() -> dict[str, Any]:
    """Manifest and the models it refers to, as OpenAPI 3.1 components (JSON Schema 2020-12)."""
    schema = manifest_schema()
    defs = schema.pop("$defs", {})
    return {"Manifest": schema, **defs}
