"""What the service lists across runs: runs with their headline figures (newest first, or
furthest from reconciling first), one run with its datasets, a pipeline's latest run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, case, func, select, tuple_

from tracer.errors import NotFoundError, TracerError
from tracer.model import RunStatus
from tracer.outcomes import RUN_BREAKERS
from tracer.queries.common import iso, parse_time, run_header
from tracer.queries.pages import MAX_PAGE, check_limit, decode_token, page
from tracer.queries.reconciliation import with_failed_conditions
from tracer.reconcile import failed_conditions
from tracer.tables import datasets, pipelines, runs, stage_summaries


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


SORTS = ("newest", "distance")
"""Orders of the run list: newest first, or furthest from reconciling first."""


def _breakers() -> Any:
    """Keys per outcome that stops a run reconciling, summed over each run's stages."""
    s = stage_summaries.c
    return (
        select(
            s.run_pk,
            *(
                func.coalesce(func.sum(s.outcomes[o.label].as_integer()), 0).label(o.label)
                for o in RUN_BREAKERS
            ),
        )
        .group_by(s.run_pk)
        .subquery("breakers")
    )


def _distance(breakers: Any) -> Any:
    """How far a run is from reconciling: |gap| + |reporting gap| + null-key rows + the
    (stage, key) pairs of every run breaker; 0 exactly when it reconciles, -1 unclassified."""
    t = runs.c.totals
    far = (
        func.abs(t["gap"].as_integer())
        + func.abs(t["reporting_gap"].as_integer())
        + t["null_key_rows"].as_integer()
    )
    for o in RUN_BREAKERS:
        far = far + func.coalesce(breakers.c[o.label], 0)
    return case((runs.c.classified_at.is_(None), -1), else_=func.coalesce(far, -1))


def _moment(text: str | None, field: str) -> datetime | None:
    """A `since` / `until` bound: an ISO date or time; without a zone, UTC."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise TracerError(
            f"{field} must be an ISO date or time (2026-11-25 or 2026-11-25T08:00:00Z); "
            f"got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def list_runs(
    conn: Connection,
    pipeline: str | None = None,
    label: str | None = None,
    status: str | None = None,
    limit: int = 50,
    after: str | None = None,
    reconciles: bool | None = None,
    since: str | None = None,
    until: str | None = None,
    sort: str = "newest",
) -> dict[str, Any]:
    """Runs with their headline figures, filtered; newest first, or by distance from
    reconciling (furthest first), keyset pages on (created_at, pk) or (distance, created_at,
    pk). `since` and `until` bound the creation time (since <= created_at < until)."""
    if sort not in SORTS:
        raise TracerError(f"sort must be one of {', '.join(SORTS)}; got {sort!r}")
    limit = check_limit(limit, MAX_PAGE)
    start, end = _moment(since, "since"), _moment(until, "until")
    scope = ("runs", pipeline, label, status, reconciles, since, until, sort)
    breakers = _breakers()
    distance = _distance(breakers).label("distance")
    query = (
        _runs_query()
        .add_columns(*(breakers.c[o.label] for o in RUN_BREAKERS), distance)
        .outerjoin(breakers, breakers.c.run_pk == runs.c.pk)
    )
    if pipeline is not None:
        query = query.where(pipelines.c.name == pipeline)
    if label is not None:
        query = query.where(runs.c.label == label)
    if status is not None:
        query = query.where(runs.c.status == RunStatus(status))
    if reconciles is not None:
        query = query.where(
            runs.c.classified_at.is_not(None),
            runs.c.totals["reconciles"].as_boolean() == reconciles,
        )
    if start is not None:
        query = query.where(runs.c.created_at >= start)
    if end is not None:
        query = query.where(runs.c.created_at < end)
    order = [runs.c.created_at.desc(), runs.c.pk.desc()]
    if sort == "distance":
        order.insert(0, distance.desc())
        if after:
            far, created, pk = decode_token(after, scope, (int, str, int))
            query = query.where(
                tuple_(_distance(breakers), runs.c.created_at, runs.c.pk)
                < tuple_(far, parse_time(created), pk)
            )
    elif after:
        created, pk = decode_token(after, scope, (str, int))
        query = query.where(tuple_(runs.c.created_at, runs.c.pk) < tuple_(parse_time(created), pk))
    rows = conn.execute(query.order_by(*order).limit(limit + 1)).all()
    last = None
    if len(rows) > limit:
        end_row = rows[limit - 1]
        last = (iso(end_row.created_at), end_row.pk)
        if sort == "distance":
            last = (end_row.distance, *last)
    return page([_surveyed(r) for r in rows[:limit]], last, scope)


def _surveyed(row: Any) -> dict[str, Any]:
    """A run as the list shows it: the run object and its headline figures (null until
    classified)."""
    if row.classified_at is None or row.totals is None:
        return {**run_header(row), "figures": None}
    t = row.totals
    anomalies = {o.label: int(getattr(row, o.label) or 0) for o in RUN_BREAKERS}
    figures = {name: t[name] for name in HEADLINE}
    return {
        **run_header(row),
        "figures": {
            **figures,
            "anomalies": anomalies,
            "reconciles": t["reconciles"],
            "failed_conditions": failed_conditions(t, anomalies),
            "distance": row.distance,
        },
    }


HEADLINE = ("entered", "targeted", "traced", "traced_reported", "gap", "reporting_gap",
            "null_key_rows")  # fmt: skip
"""The totals a run list shows of each run."""


def latest_run(conn: Connection, pipeline: str) -> str:
    """The id of the pipeline's newest run with a published classification: `latest`."""
    run_id = conn.execute(
        select(runs.c.run_id)
        .join(pipelines, pipelines.c.id == runs.c.pipeline_id)
        .where(pipelines.c.name == pipeline, runs.c.classified_at.is_not(None))
        .order_by(runs.c.created_at.desc(), runs.c.pk.desc())
        .limit(1)
    ).scalar()
    if run_id is None:
        known = conn.execute(select(pipelines.c.id).where(pipelines.c.name == pipeline)).first()
        what = "has no classified run yet" if known else "is not a registered pipeline"
        raise NotFoundError(f"pipeline {pipeline!r} {what}")
    return run_id


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
        "totals": _totals(conn, row),
    }


def _totals(conn: Connection, row: Any) -> dict[str, Any] | None:
    """The published totals, with the conditions that stop the run reconciling."""
    if row.classified_at is None:
        return None
    s = stage_summaries.c
    outcomes = conn.execute(select(s.outcomes).where(s.run_pk == row.pk)).scalars().all()
    return with_failed_conditions(row.totals, list(outcomes))


def run_jobs(conn: Connection, run_id: str) -> dict[str, Any]:
    """What the queue runs for a run: one ingest job per dataset, then the classification
    (the dispatcher names each job after its dataset or run)."""
    row = conn.execute(_runs_query().where(runs.c.run_id == run_id)).first()
    if row is None:
        raise NotFoundError(f"run {run_id!r} not found")
    d = datasets.c
    parts = conn.execute(
        select(d.id, d.name, d.role).where(d.run_pk == row.pk).order_by(d.id)
    ).all()
    return {
        "run": run_header(row),
        "run_pk": row.pk,
        "jobs": [
            *({"for": f"ingest {p.role} {p.name}", "dataset_id": p.id} for p in parts),
            {"for": "classify", "dataset_id": None},
        ],
    }
