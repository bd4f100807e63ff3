"""A run's anomaly list, by outcome and stage, and the keys behind a gap cell; keyset pages.

Every item explains itself: the stage, the key's outcome there, the reasons logged
there (source, and whether reporting sees it) and the key's final outcome; every
page carries the list's total, read from what classification stored.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, func, select, tuple_

from tracer.errors import TracerError
from tracer.outcomes import UNREMARKABLE, Final, Outcome, parse_stage_cells
from tracer.queries.common import RunInfo, load_run
from tracer.queries.explain import outcome_label, reasons_of
from tracer.queries.pages import check_limit, decode_token, page
from tracer.reconcile import CELL_NAMES
from tracer.tables import anomalies as anomalies_table
from tracer.tables import key_outcomes, stage_summaries


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
    a, k = anomalies_table.c, key_outcomes.c
    query = (
        select(a.stage, a.key, a.rows_in, a.rows_out, a.rows_dropped, k.final, k.stages)
        .join(key_outcomes, and_(k.run_pk == a.run_pk, k.key == a.key))
        .where(a.run_pk == run.pk, a.outcome == code.value)
    )
    index = _stage_index(run, stage)
    if index is not None:
        query = query.where(a.stage == index)
    if after:
        last_stage, last_key = decode_token(after, scope, (int, str))
        query = query.where(tuple_(a.stage, a.key) > tuple_(last_stage, last_key))
    rows = conn.execute(query.order_by(a.stage, a.key).limit(limit + 1)).all()
    reasons = reasons_of(conn, run, [r.key for r in rows[:limit]])
    items = []
    for r in rows[:limit]:
        cell = parse_stage_cells(r.stages)[r.stage]
        items.append(
            {
                "stage": run.stages[r.stage],
                "key": run.decode_key(r.key),
                "outcome": cell.outcome.label if cell else code.label,
                "rows_in": r.rows_in,
                "rows_out": r.rows_out,
                "rows_dropped": r.rows_dropped,
                "extra_rows": max(r.rows_out - r.rows_in, 0),
                "reasons": reasons.get((r.key, r.stage), []),
                "final_outcome": Final(r.final).label,
            }
        )
    last = (rows[limit - 1].stage, rows[limit - 1].key) if len(rows) > limit else None
    total = _anomaly_total(conn, run, code, index)
    return page(items, last, scope, run=run.header(), outcome=code.label, stage=stage, total=total)


def _stage_index(run: RunInfo, stage: str | None) -> int | None:
    if stage is None:
        return None
    if stage not in run.stages:
        raise TracerError(
            f"stage {stage!r} is not a stage of run {run.run_id!r}: {', '.join(run.stages)}"
        )
    return run.stages.index(stage)


def _anomaly_total(conn: Connection, run: RunInfo, code: Outcome, stage: int | None) -> int:
    """Keys of the whole list, from the stage summaries classification stored."""
    s = stage_summaries.c
    counted = (
        s.flags["grain_violation"] if code is Outcome.GRAIN_VIOLATION else s.outcomes[code.label]
    )
    query = select(func.coalesce(func.sum(counted.as_integer()), 0)).where(s.run_pk == run.pk)
    if stage is not None:
        query = query.where(s.stage_index == stage)
    return int(conn.execute(query).scalar_one())


def cell_flags(cell: str) -> tuple[bool, bool, bool]:
    """(entered, targeted, traced) of a gap cell by name; a clear error for an unknown one."""
    by_name = {name: flags for flags, name in CELL_NAMES.items()}
    if cell not in by_name:
        raise TracerError(f"unknown gap cell {cell!r}; cells: {', '.join(by_name)}")
    return by_name[cell]


def gap_keys(
    conn: Connection,
    run_id: str,
    cell: str,
    reporting: bool = False,
    limit: int = 100,
    after: str | None = None,
    stage: str | None = None,
    outcome: str | None = None,
) -> dict[str, Any]:
    """The keys behind one cell of the gap (or of the reporting gap), each with its cause
    (docs/semantics.md#causes); in cause order (stage in pipeline order, outcome), then key.

    `stage` and `outcome` keep the keys of one cause. Read through the cell's index.
    """
    run = load_run(conn, run_id, summary=True)
    entered, targeted, traced = cell_flags(cell)
    limit = check_limit(limit)
    scope = ("gap_keys", run.run_id, cell, reporting, stage, outcome)
    k = key_outcomes.c
    traced_col = k.traced_reported if reporting else k.traced
    cause_stage = k.reporting_cause_stage if reporting else k.cause_stage
    cause_outcome = k.reporting_cause_outcome if reporting else k.cause_outcome
    query = select(k.key, k.final, k.stages, cause_stage, cause_outcome).where(
        k.run_pk == run.pk, k.entered == entered, k.targeted == targeted, traced_col == traced
    )
    index = _stage_index(run, stage)
    code = _cause_outcome(outcome)
    if index is not None:
        query = query.where(cause_stage == index)
    if code is not None:
        query = query.where(cause_outcome == code.value)
    if after:
        last_stage, last_outcome, last_key = decode_token(after, scope, (int, int, str))
        if last_stage < 0:  # the `targeted` cell: no cause, key order
            query = query.where(k.key > last_key)
        else:
            query = query.where(
                tuple_(cause_stage, cause_outcome, k.key)
                > tuple_(last_stage, last_outcome, last_key)
            )
    rows = conn.execute(query.order_by(cause_stage, cause_outcome, k.key).limit(limit + 1)).all()
    reasons = reasons_of(conn, run, [r.key for r in rows[:limit]])
    items = []
    for r in rows[:limit]:
        where = r[3]
        items.append(
            {
                "key": run.decode_key(r.key),
                "stage": run.stages[where] if where is not None else None,
                "outcome": outcome_label(r[4]),
                "reasons": reasons.get((r.key, where), []) if where is not None else [],
                "final_outcome": Final(r.final).label,
            }
        )
    last = None
    if len(rows) > limit:
        end = rows[limit - 1]
        last = (-1 if end[3] is None else end[3], end[4] or 0, end.key)
    total = _cell_total(run, cell, reporting, stage, code)
    return page(
        items, last, scope, run=run.header(), cell=cell, reporting=reporting,
        stage=stage, outcome=code.label if code else None, total=total,
    )  # fmt: skip


def _cause_outcome(outcome: str | None) -> Outcome | None:
    if outcome is None:
        return None
    try:
        return Outcome.parse(outcome)
    except ValueError as exc:
        raise TracerError(str(exc)) from None


def _cell_total(
    run: RunInfo, cell: str, reporting: bool, stage: str | None, outcome: Outcome | None
) -> int:
    """Keys of the cell (of one cause, when asked), from the split stored with the run."""
    stored = (run.row.gap_cells or {}).get("reporting_gap_cells" if reporting else "gap_cells")
    for c in stored or []:
        if c["cell"] == cell:
            return sum(
                cause["keys"]
                for cause in c.get("causes", [])
                if (stage is None or cause["stage"] == stage)
                and (outcome is None or cause["outcome"] == outcome.label)
            )
    return 0
