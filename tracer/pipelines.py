"""The pipeline registry: definitions by name, so a manifest may name one instead."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from tracer.model import Pipeline
from tracer.queries.common import iso
from tracer.queries.pages import MAX_PAGE, check_limit, decode_token, page
from tracer.tables import pipelines, runs


def register_pipeline(conn: Connection, pipeline: Pipeline) -> dict[str, Any]:
    """The registry keeps each pipeline's latest definition; runs keep their own copy.

    Returns the run row's columns that point at the pipeline.
    """
    name, spec = pipeline.name, pipeline.spec
    row = conn.execute(
        select(pipelines.c.id, pipelines.c.spec).where(pipelines.c.name == name)
    ).first()
    if row is None:
        pipeline_id = conn.execute(
            insert(pipelines).values(name=name, spec=spec).returning(pipelines.c.id)
        ).scalar_one()
        return {"pipeline_id": pipeline_id}
    if row.spec != spec:
        conn.execute(
            update(pipelines)
            .where(pipelines.c.id == row.id)
            .values(spec=spec, updated_at=func.now())
        )
    return {"pipeline_id": row.id}


def pipeline_lookup(engine: Engine) -> Callable[[str], dict[str, Any]]:
    """For manifests that name a registered pipeline instead of spelling it out."""

    def lookup(name: str) -> dict[str, Any]:
        with engine.connect() as conn:
            spec = conn.execute(select(pipelines.c.spec).where(pipelines.c.name == name)).scalar()
        if spec is None:
            raise KeyError(name)
        return spec

    return lookup


def list_pipelines(conn: Connection, limit: int = 50, after: str | None = None) -> dict[str, Any]:
    """Registered pipelines by name, with their key, stages and number of runs."""
    limit = check_limit(limit, MAX_PAGE)
    scope = ("pipelines",)
    counts = (
        select(
            runs.c.pipeline_id,
            func.count().label("runs"),
            func.max(runs.c.created_at).label("last"),
        )
        .group_by(runs.c.pipeline_id)
        .subquery()
    )
    query = select(pipelines.c.name, pipelines.c.spec, counts.c.runs, counts.c.last).outerjoin(
        counts, counts.c.pipeline_id == pipelines.c.id
    )
    if after:
        (last_name,) = decode_token(after, scope, (str,))
        query = query.where(pipelines.c.name > last_name)
    rows = conn.execute(query.order_by(pipelines.c.name).limit(limit + 1)).all()
    items = [
        {
            "name": r.name,
            "key": r.spec["key"],
            "stages": [s["name"] for s in r.spec["stages"]],
            "traceability": [t["name"] for t in r.spec.get("traceability", [])],
            "runs": r.runs or 0,
            "last_run_at": iso(r.last),
        }
        for r in rows[:limit]
    ]
    return page(items, (rows[limit - 1].name,) if len(rows) > limit else None, scope)
