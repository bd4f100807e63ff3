"""Per-stage figures the stored summaries lack: drops split by source, and each stage's share
of the gap.

The lineage graph and the OpenLineage facet carry them on every stage. Computed on
request from the run's partitions: one aggregate over its traceability rows, and
one count of the keys that move a gap by pattern (a few dozen groups).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Integer, cast, func, or_, select

from tracer.outcomes import StageCell, parse_stage_cells
from tracer.queries.common import RunInfo
from tracer.queries.patterns import run_patterns
from tracer.reconcile import CELL_NAMES
from tracer.tables import datasets, key_outcomes, key_reasons


@dataclass(frozen=True)
class SourceDrops:
    """Traceability rows of one source attributed to one stage."""

    stage: str
    source: str
    reported: bool
    rows: int
    keys: int


def source_drops(conn: Connection, run: RunInfo) -> list[SourceDrops]:
    """Rows and distinct keys each traceability source attributes to each stage."""
    r = key_reasons.c
    rows = conn.execute(
        select(r.stage, datasets.c.name, func.sum(r.rows), func.count(r.key.distinct()))
        .join(datasets, datasets.c.id == r.dataset_id)
        .where(r.run_pk == run.pk)
        .group_by(r.stage, datasets.c.name)
        .order_by(r.stage, datasets.c.name)
    ).all()
    return [
        SourceDrops(run.stages[stage], name, run.layout.reported[name], int(n), int(keys))
        for stage, name, n, keys in rows
    ]


def stage_drops(
    conn: Connection, run: RunInfo, by_source: list[SourceDrops] | None = None
) -> dict[str, dict[str, int]]:
    """Per stage: rows and distinct keys dropped with a reported reason, and operational-only.

    `by_source` is `source_drops` of the run, when the caller has it already.
    """
    out = {
        s: {"rows_reported": 0, "rows_operational": 0, "keys_reported": 0, "keys_operational": 0}
        for s in run.stages
    }
    for d in source_drops(conn, run) if by_source is None else by_source:
        out[d.stage]["rows_reported" if d.reported else "rows_operational"] += d.rows
    reported = [name for name, is_reported in run.layout.reported.items() if is_reported]
    r = key_reasons.c
    side = datasets.c.name.in_(reported) if reported else False
    for stage, is_reported, keys in conn.execute(
        select(r.stage, side, func.count(r.key.distinct()))
        .join(datasets, datasets.c.id == r.dataset_id)
        .where(r.run_pk == run.pk)
        .group_by(r.stage, side)
    ):
        out[run.stages[stage]]["keys_reported" if is_reported else "keys_operational"] += keys
    return out


def gap_contributions(conn: Connection, run: RunInfo) -> dict[str, dict[str, Any]]:
    """Each stage's part of the gap and of the reporting gap, per gap cell.

    Every key in a cell that moves a gap has one cause stage (docs/semantics.md#causes):
    where it left (`lost`), where it was first logged as dropped (`counted_twice`), or
    where it first shows up (the `*_without_entering` cells). Summed over the stages,
    the contributions give the run's `gap` and `reporting_gap`.
    """
    out: dict[str, dict[str, Any]] = {
        s: {"gap": 0, "reporting_gap": 0, "cells": {}, "reporting_cells": {}} for s in run.stages
    }
    k = key_outcomes.c

    def moves(traced: Any) -> Any:
        return cast(k.entered, Integer) - cast(k.targeted, Integer) - cast(traced, Integer) != 0

    flags = (k.entered, k.targeted, k.traced, k.traced_reported)
    query = (
        select(*flags, k.pattern, func.count().label("keys"))
        .where(k.run_pk == run.pk, or_(moves(k.traced), moves(k.traced_reported)))
        .group_by(*flags, k.pattern)
    )
    patterns = run_patterns(conn, run)
    for row in conn.execute(query):  # keys alike in flags and pattern, counted once
        cells = parse_stage_cells(patterns[row.pattern])
        for gap, traced, reported in (
            ("gap", row.traced, False),
            ("reporting_gap", row.traced_reported, True),
        ):
            moved = (int(row.entered) - int(row.targeted) - int(traced)) * row.keys
            if moved == 0:
                continue
            stage = run.stages[_cause(cells, row.entered, row.targeted, reported)]
            name = CELL_NAMES[(row.entered, row.targeted, traced)]
            figures = out[stage]
            figures[gap] += moved
            by_cell = figures["reporting_cells" if reported else "cells"]
            by_cell[name] = by_cell.get(name, 0) + moved
    return out


def _cause(cells: list[StageCell | None], entered: bool, targeted: bool, reported: bool) -> int:
    """The index of the stage that explains a key's place in a gap cell."""
    present = [(i, c) for i, c in enumerate(cells) if c is not None]
    if entered and not targeted:  # lost: where it left, the stage of its final outcome
        left = [i for i, c in present if c.rows_in >= 1 and c.rows_out == 0]
        return (left or [i for i, _ in present])[-1]
    if entered:  # counted twice: the first stage that logged it as dropped
        logged = [i for i, c in present if c.drop_rep + (0 if reported else c.drop_ops) >= 1]
        return (logged or [i for i, _ in present])[0]
    return present[0][0]  # without entering: where it first shows up
