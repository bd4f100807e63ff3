"""Run totals, the gap explained cell by cell, and the stage-level flags.

Computed once at classification and stored with the run, so a reconciliation
is a read of a few rows (docs/semantics.md#reconciliation).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import duckdb
from sqlalchemy import Connection, select

from tracer.model import DatasetRole, Pipeline
from tracer.outcomes import RUN_BREAKERS, Final, Outcome
from tracer.tables import datasets

SAMPLE_KEYS = 10

# (entered, targeted, traced) -> the name of the cell, for people and for --cell.
CELL_NAMES = {
    (True, False, False): "lost",
    (True, True, True): "counted_twice",
    (False, True, False): "targeted_without_entering",
    (False, False, True): "traced_without_entering",
    (False, True, True): "targeted_and_traced_without_entering",
    (True, True, False): "targeted",
    (True, False, True): "traced",
    (False, False, False): "neither",
}


def flags_by_stage(
    conn: Connection, run_pk: int, pipeline: Pipeline, grain_keys: dict[int, int]
) -> dict[str, dict[str, Any]]:
    """duplicate_rows, grain_violation, null_key and dropped columns (schema drift) per stage."""
    rows = conn.execute(
        select(
            datasets.c.name,
            datasets.c.role,
            datasets.c.duplicate_rows,
            datasets.c.null_key_rows,
            datasets.c.columns,
        ).where(datasets.c.run_pk == run_pk)
    ).all()
    outputs = {r.name: r for r in rows if r.role == DatasetRole.OUTPUT}
    traced_null: dict[str, int] = {}
    for r in rows:
        if r.role == DatasetRole.TRACEABILITY:
            for stage, count in (r.null_key_rows or {}).items():
                traced_null[stage] = traced_null.get(stage, 0) + count
    flags: dict[str, dict[str, Any]] = {}
    for s in pipeline.stages:
        out = outputs[s.name]
        out_null = (out.null_key_rows or {}).get(s.name, 0)
        trace_null = traced_null.get(s.name, 0)
        flags[s.name] = {
            "duplicate_rows": int(out.duplicate_rows or 0),
            "grain_violation": int(grain_keys.get(s.index, 0)),
            "null_key": {
                "output": out_null,
                "traceability": trace_null,
                "total": out_null + trace_null,
            },
            "dropped_columns": _dropped_columns(pipeline, s.name, outputs),
        }
    return flags


def _dropped_columns(
    pipeline: Pipeline, stage: str, outputs: dict[str, Any]
) -> list[dict[str, str]]:
    """Columns a parent's output has and this stage's lacks; key and grain columns first."""
    s = pipeline.stage(stage)
    have = {c["name"] for c in outputs[stage].columns or []}
    ranked = []
    for parent in s.parents:
        for c in outputs[parent].columns or []:
            name = c["name"]
            if name in have:
                continue
            role = "key" if name in pipeline.key else "grain" if name in s.grain else "column"
            ranked.append(({"key": 0, "grain": 1, "column": 2}[role], name, parent, role))
    return [{"column": n, "parent": p, "role": r} for _, n, p, r in sorted(ranked)]


def run_totals(
    duck: duckdb.DuckDBPyConnection, summaries: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's totals and the cells that explain both gaps, from the classifier's
    `patterns` (each with its count of keys) and, for samples, its `key_finals`."""
    cells = [
        Cell(*row)
        for row in duck.execute(
            "SELECT entered, targeted, traced, traced_reported, final, cause_stage, "
            "cause_outcome, reporting_cause_stage, reporting_cause_outcome, sum(keys) "
            "FROM patterns GROUP BY ALL"
        ).fetchall()
    ]
    total = sum(c.n for c in cells)

    def count(predicate: Any) -> int:
        return sum(c.n for c in cells if predicate(c))

    entered = count(lambda c: c.entered)
    finals = {f: count(lambda c, f=f: c.final == f.value) for f in Final}
    traced = count(lambda c: c.traced)
    traced_reported = count(lambda c: c.traced_reported)
    targeted = finals[Final.TARGETED]
    gap = entered - targeted - traced
    reporting_gap = entered - targeted - traced_reported
    null_rows = sum(s["flags"]["null_key"]["total"] for s in summaries)
    breakers = sum(s["outcomes"][o.label] for s in summaries for o in RUN_BREAKERS)
    totals = {
        "keys": total,
        "entered": entered,
        "targeted": targeted,
        "dropped": finals[Final.DROPPED],
        "dropped_unreported": finals[Final.DROPPED_UNREPORTED],
        "orphaned": finals[Final.ORPHANED],
        "never_entered": finals[Final.NEVER_ENTERED],
        "residual": entered
        - targeted
        - finals[Final.DROPPED]
        - finals[Final.DROPPED_UNREPORTED]
        - finals[Final.ORPHANED],
        "traced": traced,
        "traced_reported": traced_reported,
        "gap": gap,
        "reporting_gap": reporting_gap,
        "null_key_rows": null_rows,
        "reconciles": breakers == 0 and null_rows == 0 and gap == 0 and reporting_gap == 0,
    }
    stages = [s["stage"] for s in sorted(summaries, key=lambda s: s["stage_index"])]
    explained = {
        "gap_cells": _cells(duck, cells, stages, reporting=False),
        "reporting_gap_cells": _cells(duck, cells, stages, reporting=True),
    }
    return totals, explained


class Cell(NamedTuple):
    """Keys of one (entered, targeted, traced, traced_reported, final, causes) combination."""

    entered: bool
    targeted: bool
    traced: bool
    traced_reported: bool
    final: int
    cause_stage: int | None
    cause_outcome: int | None
    reporting_cause_stage: int | None
    reporting_cause_outcome: int | None
    n: int

    def of(self, reporting: bool) -> tuple[tuple[bool, bool, bool], tuple[int | None, int | None]]:
        """The key's gap cell and cause, for the gap or the reporting gap."""
        if reporting:
            cell = (self.entered, self.targeted, self.traced_reported)
            return cell, (self.reporting_cause_stage, self.reporting_cause_outcome)
        return (self.entered, self.targeted, self.traced), (self.cause_stage, self.cause_outcome)


def contribution(entered: bool, targeted: bool, traced: bool) -> int:
    """What one key of the cell adds to the gap (docs/semantics.md#gap-cells)."""
    return int(entered) - int(targeted) - int(traced)


def _cells(
    duck: duckdb.DuckDBPyConnection, cells: list[Cell], stages: list[str], reporting: bool
) -> list[dict[str, Any]]:
    """Every non-empty (entered, targeted, traced) cell, split by cause; a sample of the
    cells that move the gap.

    Stored with the run; the reconciliation shows the cells that move the gap, and the
    others give the totals of their pages.
    """
    by_cell: dict[tuple[bool, bool, bool], dict[tuple[int, int], int]] = {}
    for c in cells:
        cell, cause = c.of(reporting)
        causes = by_cell.setdefault(cell, {})
        # No cause (the `targeted` cell) sorts after every stage.
        rank = (-1, -1) if cause[0] is None else (int(cause[0]), int(cause[1] or 0))
        causes[rank] = causes.get(rank, 0) + c.n
    traced = "traced_reported" if reporting else "traced"
    out = []
    for (e, t, r), causes in sorted(by_cell.items(), reverse=True):
        n = sum(causes.values())
        # Only a cell the reconciliation shows gets a sample (a scan of the run's keys each).
        sample = (
            [
                row[0]
                for row in duck.execute(
                    # The stored text's order, whatever type the classifier joined keys as.
                    f"SELECT CAST(key AS VARCHAR) AS k FROM key_finals WHERE entered = ? "
                    f"AND targeted = ? AND {traced} = ? ORDER BY k LIMIT {SAMPLE_KEYS}",
                    [e, t, r],
                ).fetchall()
            ]
            if contribution(e, t, r)
            else []
        )
        out.append(
            {
                "cell": CELL_NAMES[(e, t, r)],
                "entered": e,
                "targeted": t,
                "traced": r,
                "keys": n,
                "contribution": contribution(e, t, r) * n,
                "sample": sample,
                "causes": [
                    {
                        "stage": stages[stage] if stage >= 0 else None,
                        "outcome": Outcome(outcome).label if stage >= 0 else None,
                        "keys": keys,
                    }
                    for (stage, outcome), keys in sorted(
                        causes.items(), key=lambda item: (item[0][0] < 0, item[0])
                    )
                ],
            }
        )
    return out


def breaker_counts(stage_outcomes: list[dict[str, int]]) -> dict[str, int]:
    """Keys per outcome that stops a run reconciling, summed over the stages (pairs of
    stage and key, as the anomaly list counts them)."""
    return {o.label: sum(s.get(o.label, 0) for s in stage_outcomes) for o in RUN_BREAKERS}


def failed_conditions(totals: dict[str, Any], breakers: dict[str, int]) -> list[str]:
    """Why a run does not reconcile, one condition a line (docs/semantics.md#reconciles);
    empty when it does."""
    failed = [f"{n:,} {outcome} keys" for outcome, n in breakers.items() if n]
    if totals.get("null_key_rows"):
        failed.append(f"{totals['null_key_rows']:,} rows with a null key")
    for name in ("gap", "reporting_gap"):
        if totals.get(name):
            failed.append(f"{name.replace('_', ' ')} {totals[name]:,}")
    return failed
