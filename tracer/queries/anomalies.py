"""A run's anomaly list, by outcome and stage, and the keys behind a gap cell; keyset pages."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, select, tuple_

from tracer.errors import TracerError
from tracer.outcomes import UNREMARKABLE, Outcome
from tracer.queries.common import load_run
from tracer.queries.pages import check_limit, decode_token, page
from tracer.reconcile import CELL_NAMES
from tracer.tables import anomalies as anomalies_table
from tracer.tables import key_outcomes


def anomalies(
    conn: Connection,
    run_id: str,
    outcome: str,
    stage: str | None = None,
    limit: int = 100,
    after: str | None = None,
) -> dict[str, Any]:
    """The keys with `outcome` (or a grain violation) at a stage, by stage then key."""
    run = load_run(conn, run_id)
    try:
        code = Outcome.parse(outcome)
    except ValueError as exc:
        raise TracerError(str(exc)) from None
    if code in UNREMARKABLE:
        raise TracerError(
            f"{code.label!r} is the normal case, not an anomaly; it is counted in the "
            "reconciliation"
        )
    limit = check_limit(limit)
    scope = ("anomalies", run.run_id, code.label, stage)
    a = anomalies_table.c
    query = select(a.stage, a.key, a.rows_in, a.rows_out, a.rows_dropped).where(
        a.run_pk == run.pk, a.outcome == code.value
    )
    if stage is not None:
        if stage not in run.stages:
            raise TracerError(
                f"stage {stage!r} is not a stage of run {run_id!r}: {', '.join(run.stages)}"
            )
        query = query.where(a.stage == run.stages.index(stage))
    if after:
        last_stage, last_key = decode_token(after, scope, (int, str))
        query = query.where(tuple_(a.stage, a.key) > tuple_(last_stage, last_key))
    rows = conn.execute(query.order_by(a.stage, a.key).limit(limit + 1)).all()
    items = [
        {
            "stage": run.stages[r.stage],
            "key": run.decode_key(r.key),
            "rows_in": r.rows_in,
            "rows_out": r.rows_out,
            "rows_dropped": r.rows_dropped,
            "extra_rows": max(r.rows_out - r.rows_in, 0),
        }
        for r in rows[:limit]
    ]
    last = (rows[limit - 1].stage, rows[limit - 1].key) if len(rows) > limit else None
    return page(items, last, scope, run=run.header(), outcome=code.label, stage=stage)


def gap_keys(
    conn: Connection,
    run_id: str,
    cell: str,
    reporting: bool = False,
    limit: int = 100,
    after: str | None = None,
) -> dict[str, Any]:
    """The keys behind one cell of the gap (or of the reporting gap), in key order."""
    run = load_run(conn, run_id)
    by_name = {name: flags for flags, name in CELL_NAMES.items()}
    if cell not in by_name:
        raise TracerError(f"unknown gap cell {cell!r}; cells: {', '.join(by_name)}")
    limit = check_limit(limit)
    scope = ("gap_keys", run.run_id, cell, reporting)
    entered, targeted, traced = by_name[cell]
    k = key_outcomes.c
    traced_col = k.traced_reported if reporting else k.traced
    query = select(k.key).where(
        and_(k.run_pk == run.pk, k.entered == entered, k.targeted == targeted, traced_col == traced)
    )
    if after:
        (last_key,) = decode_token(after, scope, (str,))
        query = query.where(k.key > last_key)
    keys = conn.execute(query.order_by(k.key).limit(limit + 1)).scalars().all()
    items = [{"key": run.decode_key(key)} for key in keys[:limit]]
    last = (keys[limit - 1],) if len(keys) > limit else None
    return page(items, last, scope, run=run.header(), cell=cell, reporting=reporting)
