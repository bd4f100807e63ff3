"""The pipeline registry: definitions by name, so a manifest may name one instead."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from tracer.model import Pipeline
from tracer.tables import pipelines


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
