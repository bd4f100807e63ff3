"""Runs and pipelines as listed by the service: newest first, filtered, with dataset status."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from tracer.errors import NotFoundError, TracerError
from tracer.model import RunStatus
from tracer.tables import datasets, pipelines, runs

MAX_PAGE = 500


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _summary(row: Any) -> dict[str, Any]:
    return {
        "run_id": row.run_id,
        "pipeline": row.pipeline_name,
        "label": row.label,
        "rerun_of": row.rerun_of,
        "status": row.status,
        "error": row.error,
        "created_at": _iso(row.created_at),
        "classified_at": _iso(row.classified_at),
    }


def _runs_query() -> Any:
    return select(
        runs.c.pk,
        runs.c.run_id,
        runs.c.label,
        runs.c.rerun_of,
        runs.c.status,
        runs.c.error,
        runs.c.created_at,
        runs.c.classified_at,
        runs.c.totals,
        pipelines.c.name.label("pipeline_name"),
    ).join(pipelines, pipelines.c.id == runs.c.pipeline_id)


def list_runs(
    conn: Connection,
    pipeline: str | None = None,
    label: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """Runs newest first; a small list, so limit/offset with the total count."""
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise TracerError(f"limit must be between 1 and {MAX_PAGE} and offset >= 0")
    query = _runs_query()
    if pipeline is not None:
        query = query.where(pipelines.c.name == pipeline)
    if label is not None:
        query = query.where(runs.c.label == label)
    if status is not None:
        query = query.where(runs.c.status == status)
    total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = conn.execute(
        query.order_by(runs.c.created_at.desc(), runs.c.pk.desc()).limit(limit).offset(offset)
    ).all()
    return {
        "items": [_summary(r) for r in rows],
        "total_count": total,
        "limit": limit,
        "offset": offset,
    }


def run_detail(conn: Connection, run_id: str) -> dict[str, Any]:
    """The run, the status of each dataset, and its totals once classified."""
    row = conn.execute(_runs_query().where(runs.c.run_id == run_id)).first()
    if row is None:
        raise NotFoundError(f"run {run_id!r} not found")
    d = datasets.c
    parts = conn.execute(
        select(
            d.name,
            d.role,
            d.uri,
            d.status,
            d.error,
            d.row_count,
            d.key_count,
            d.duplicate_rows,
            d.fingerprint,
            d.ingested_at,
        )
        .where(d.run_pk == row.pk)
        .order_by(d.id)
    ).all()
    return {
        **_summary(row),
        "datasets": [
            {
                "name": p.name,
                "role": p.role,
                "uri": p.uri,
                "status": p.status,
                "error": p.error,
                "row_count": p.row_count,
                "key_count": p.key_count,
                "duplicate_rows": p.duplicate_rows,
                "fingerprint": p.fingerprint,
                "ingested_at": _iso(p.ingested_at),
            }
            for p in parts
        ],
        "totals": row.totals if row.status == RunStatus.CLASSIFIED else None,
    }


def list_pipelines(conn: Connection) -> dict[str, Any]:
    counts = (
        select(
            runs.c.pipeline_id,
            func.count().label("runs"),
            func.max(runs.c.created_at).label("last"),
        )
        .group_by(runs.c.pipeline_id)
        .subquery()
    )
    rows = conn.execute(
        select(pipelines.c.name, pipelines.c.spec, counts.c.runs, counts.c.last)
        .outerjoin(counts, counts.c.pipeline_id == pipelines.c.id)
        .order_by(pipelines.c.name)
    ).all()
    return {
        "items": [
            {
                "name": r.name,
                "key": r.spec["key"],
                "stages": [s["name"] for s in r.spec["stages"]],
                "traceability": [t["name"] for t in r.spec.get("traceability", [])],
                "runs": r.runs or 0,
                "last_run_at": _iso(r.last),
            }
            for r in rows
        ]
    }
