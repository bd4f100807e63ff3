"""A run's anomaly list, by outcome and stage, and the keys behind a gap cell; keyset pages.

Every item explains itself: the stage, the key's outcome there, the reasons logged
there (source, and whether reporting sees it) and the key's final outcome; every
page carries the list's total, read from what classification stored.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import Connection, and_, not_, select, tuple_

from tracer.errors import TracerError
from tracer.outcomes import UNREMARKABLE, Final, Outcome, parse_stage_cells
from tracer.queries.common import RunInfo, load_run
from tracer.queries.explain import outcome_label, reasons_of
from tracer.queries.pages import check_limit, decode_token, page
from tracer.queries.patterns import run_patterns
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
    index = _stage_index(run, stage)
    counts = _group_sizes(conn, run, code)
    last_stage, last_key = decode_token(after, scope, (int, str)) if after else (-1, None)
    rows: list[Any] = []
    patterns = run_patterns(conn, run)
    for s, n in enumerate(counts):
        if not n or (index is not None and s != index) or s < last_stage:
            continue
        since = last_key if s == last_stage else None
        rows += _group_page(conn, run, patterns, code, s, since, limit + 1 - len(rows))
        if len(rows) > limit:
            break
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
    total = sum(counts) if index is None else counts[index]
    return page(items, last, scope, run=run.header(), outcome=code.label, stage=stage, total=total)


class _Listed(NamedTuple):
    stage: int
    key: str
    rows_in: int
    rows_out: int
    rows_dropped: int
    final: int
    stages: str


def _group_page(
    conn: Connection,
    run: RunInfo,
    patterns: dict[int, str],
    code: Outcome,
    stage: int,
    after: str | None,
    limit: int,
) -> list[_Listed]:
    """Keys of one (stage, outcome) group of the anomaly list, in key order, after `after`.

    A group classification stored (tracer.classify.dense_groups) is a range of
    `anomalies`; a dense one is read from `key_outcomes` in key order, keeping the keys
    whose pattern (`patterns`: the run's, read once a page) has the outcome (or the grain
    flag) at the stage: with at least DENSE_SHARE of the keys in the group, a page reads a
    few thousand index entries.
    """
    a, k = anomalies_table.c, key_outcomes.c
    stored = select(a.key).where(a.run_pk == run.pk, a.outcome == code.value, a.stage == stage)
    if conn.execute(stored.limit(1)).first() is not None:
        query = (
            select(a.key, a.rows_in, a.rows_out, a.rows_dropped, k.final, k.pattern)
            .join(key_outcomes, and_(k.run_pk == a.run_pk, k.key == a.key))
            .where(a.run_pk == run.pk, a.outcome == code.value, a.stage == stage)
        )
        if after is not None:
            query = query.where(a.key > after)
        rows = conn.execute(query.order_by(a.key).limit(limit)).all()
        return [_Listed(stage, *r[:-1], patterns[r.pattern]) for r in rows]
    kept = [
        number
        for number, stages in patterns.items()
        if (cell := parse_stage_cells(stages)[stage]) is not None
        and (cell.grain_violation if code is Outcome.GRAIN_VIOLATION else cell.outcome is code)
    ]
    if not kept:
        return []
    query = select(k.key, k.final, k.pattern).where(k.run_pk == run.pk, k.pattern.in_(kept))
    if after is not None:
        query = query.where(k.key > after)
    out = []
    for r in conn.execute(query.order_by(k.key).limit(limit)):
        stages = patterns[r.pattern]
        c = parse_stage_cells(stages)[stage]
        assert c is not None  # an outcome or a grain violation there: a cell
        out.append(
            _Listed(stage, r.key, c.rows_in, c.rows_out, c.drop_rep + c.drop_ops, r.final, stages)
        )
    return out


def _stage_index(run: RunInfo, stage: str | None) -> int | None:
    if stage is None:
        return None
    if stage not in run.stages:
        raise TracerError(
            f"stage {stage!r} is not a stage of run {run.run_id!r}: {', '.join(run.stages)}"
        )
    return run.stages.index(stage)


def _group_sizes(conn: Connection, run: RunInfo, code: Outcome) -> list[int]:
    """Keys with `code` at each stage (pipeline order), from the stored stage summaries."""
    s = stage_summaries.c
    counted = (
        s.flags["grain_violation"] if code is Outcome.GRAIN_VIOLATION else s.outcomes[code.label]
    )
    found = dict(
        conn.execute(select(s.stage_index, counted.as_integer()).where(s.run_pk == run.pk)).all()
    )
    return [int(found.get(i) or 0) for i in range(len(run.stages))]


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
    query = select(k.key, k.final, k.pattern, cause_stage, cause_outcome).where(
        k.run_pk == run.pk, k.entered == entered, k.targeted == targeted, traced_col == traced
    )
    caused = not (entered and targeted and not traced)  # every cell but `targeted`
    if caused:  # the predicate of the cell indexes, which the filters above imply
        query = query.where(not_(and_(k.entered, k.targeted, not_(traced_col))))
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
    # The `targeted` cell has no cause: key order, through the key index.
    order = (cause_stage, cause_outcome, k.key) if caused else (k.key,)
    rows = conn.execute(query.order_by(*order).limit(limit + 1)).all()
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
