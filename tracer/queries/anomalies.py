"""Anomaly lists of a run, by outcome and stage, and the keys behind a gap cell.

Keyset-paginated: the `next` token carries the last (stage, key) returned, so
page N costs the same as page 1 whatever the run's size.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, select, tuple_

from tracer.errors import TracerError
from tracer.outcomes import UNREMARKABLE, Outcome
from tracer.queries.common import decode_token, encode_token, load_run
from tracer.reconcile import CELL_NAMES
from tracer.tables import anomalies as anomalies_table
from tracer.tables import key_outcomes

MAX_LIMIT = 10_000


def anomalies(
    conn: Connection,
    run_id: str,
    outcome: str,
    stage: str | None = None,
    limit: int = 100,
    after: str | None = None,
) -> dict[str, Any]:
    run = load_run(conn, run_id)
    try:
        code = Outcome.parse(outcome)
    except ValueError as exc:
        raise TracerError(str(exc)) from None
    if code in UNREMARKABLE:
        raise TracerError(
            f"{code.label!r} is the normal case, not an anomaly; it is counted in the report"
        )
    limit = _limit(limit)
    a = anomalies_table.c
    query = select(a.stage, a.key, a.rows_in, a.rows_out, a.rows_drop).where(
        a.run_pk == run.pk, a.outcome == code.value
    )
    if stage is not None:
        if stage not in run.stages:
            raise TracerError(
                f"stage {stage!r} is not a stage of run {run_id!r}: {', '.join(run.stages)}"
            )
        query = query.where(a.stage == run.stages.index(stage))
    if after:
        last = decode_token(after)
        query = query.where(tuple_(a.stage, a.key) > tuple_(int(last[0]), str(last[1])))
    rows = conn.execute(query.order_by(a.stage, a.key).limit(limit + 1)).all()
    items = [
        {
            "stage": run.stages[r.stage],
            "key": run.decode_key(r.key),
            "rows_in": r.rows_in,
            "rows_out": r.rows_out,
            "rows_drop": r.rows_drop,
            "extra_rows": max(r.rows_out - r.rows_in, 0),
        }
        for r in rows[:limit]
    ]
    more = len(rows) > limit
    return {
        "run": run.run_id,
        "outcome": code.label,
        "stage": stage,
        "items": items,
        "next": encode_token([rows[limit - 1].stage, rows[limit - 1].key]) if more else None,
    }


def gap_keys(
    conn: Connection,
    run_id: str,
    cell: str,
    reporting: bool = False,
    limit: int = 100,
    after: str | None = None,
) -> dict[str, Any]:
    """The keys behind one cell of the gap (or of the reporting gap)."""
    run = load_run(conn, run_id)
    by_name = {name: flags for flags, name in CELL_NAMES.items()}
    if cell not in by_name:
        raise TracerError(f"unknown gap cell {cell!r}; cells: {', '.join(by_name)}")
    entered, targeted, traced = by_name[cell]
    k = key_outcomes.c
    traced_col = k.traced_reported if reporting else k.traced
    query = select(k.key).where(
        and_(k.run_pk == run.pk, k.entered == entered, k.targeted == targeted, traced_col == traced)
    )
    if after:
        query = query.where(k.key > str(decode_token(after)[0]))
    keys = conn.execute(query.order_by(k.key).limit(_limit(limit) + 1)).scalars().all()
    limit = _limit(limit)
    return {
        "run": run.run_id,
        "cell": cell,
        "reporting": reporting,
        "items": [run.decode_key(key) for key in keys[:limit]],
        "next": encode_token([keys[limit - 1]]) if len(keys) > limit else None,
    }


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise TracerError(f"limit must be between 1 and {MAX_LIMIT}")
    return limit
