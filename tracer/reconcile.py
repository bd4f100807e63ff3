"""Run totals, the gap explained cell by cell, and the stage-level flags.

Computed once at classification and stored with the run, so a reconciliation
is a read of a few rows (docs/semantics.md#reconciliation).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import duckdb
from sqlalchemy import Connection, select

from tracer.model import DatasetRole, Pipeline
from tracer.outcomes import RUN_BREAKERS, Final
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
    """The run's totals and the cells that explain both gaps, from the classifier's `key_finals`."""
    cells = [
        Cell(*row)
        for row in duck.execute(
            "SELECT entered, targeted, traced, traced_reported, final, count(*) "
            "FROM key_finals GROUP BY ALL"
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
    explained = {
        "gap_cells": _cells(duck, cells, "traced"),
        "reporting_gap_cells": _cells(duck, cells, "traced_reported"),
    }
    return totals, explained


class Cell(NamedTuple):
    entered: bool
    targeted: bool
    traced: bool
    traced_reported: bool
    final: int
    n: int


def _cells(duck: duckdb.DuckDBPyConnection, cells: list[Cell], traced: str) -> list[dict[str, Any]]:
    """Keys split by (entered, targeted, traced); only cells that move the gap are listed."""
    by_cell: dict[tuple[bool, bool, bool], int] = {}
    for c in cells:
        cell = (c.entered, c.targeted, getattr(c, traced))
        by_cell[cell] = by_cell.get(cell, 0) + c.n
    out = []
    for (e, t, r), n in sorted(by_cell.items(), reverse=True):
        per_key = int(e) - int(t) - int(r)
        if per_key == 0 or n == 0:
            continue
        sample = [
            row[0]
            for row in duck.execute(
                f"SELECT key FROM key_finals WHERE entered = ? AND targeted = ? AND {traced} = ? "
                f"ORDER BY key LIMIT {SAMPLE_KEYS}",
                [e, t, r],
            ).fetchall()
        ]
        out.append(
            {
                "cell": CELL_NAMES[(e, t, r)],
                "entered": e,
                "targeted": t,
                "traced": r,
                "keys": n,
                "contribution": per_key * n,
                "sample": list(sample),
            }
        )
    return out
