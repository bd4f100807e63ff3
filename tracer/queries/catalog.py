"""What the service lists across runs: runs newest first, and one run with its datasets."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, tuple_

from tracer.errors import NotFoundError
from tracer.model import RunStatus
from tracer.queries.common import iso, parse_time, run_header
from tracer.queries.pages import MAX_PAGE, check_limit, decode_token, page
from tracer.tables import datasets, pipelines, runs


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
    after: str | None = None,
) -> dict[str, Any]:
    """Runs newest first, filtered; keyset pages on (created_at, pk)."""
    limit = check_limit(limit, MAX_PAGE)
    scope = ("runs", pipeline, label, status)
    query = _runs_query()
    if pipeline is not None:
        query = query.where(pipelines.c.name == pipeline)
    if label is not None:
        query = query.where(runs.c.label == label)
    if status is not None:
        query = query.where(runs.c.status == RunStatus(status))
    if after:
        created, pk = decode_token(after, scope, (str, int))
        query = query.where(tuple_(runs.c.created_at, runs.c.pk) < tuple_(parse_time(created), pk))
    rows = conn.execute(
        query.order_by(runs.c.created_at.desc(), runs.c.pk.desc()).limit(limit + 1)
    ).all()
    last = (iso(rows[limit - 1].created_at), rows[limit - 1].pk) if len(rows) > limit else None
    return page([run_header(r) for r in rows[:limit]], last, scope)


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
        **run_header(row),
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
                "ingested_at": iso(p.ingested_at),
            }
            for p in parts
        ],
        "totals": row.totals if row.status == RunStatus.CLASSIFIED else None,
    }
