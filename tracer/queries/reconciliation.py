"""The reconciliation of a run: totals, the gaps explained, and per-stage outcome counts."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, select

from tracer.errors import TracerError
from tracer.outcomes import STAGE_OUTCOMES
from tracer.queries.common import RunInfo, load_run
from tracer.queries.compare import compare
from tracer.reconcile import breaker_counts, failed_conditions
from tracer.tables import stage_summaries


def reconciliation(conn: Connection, run_id: str) -> dict[str, Any]:
    """The object `tracer reconciliation --json` prints; precomputed at classification.

    A rerun (a run naming `rerun_of`) also says how many clients it changed, with the
    command and the URL that compare it with the run it repeats.
    """
    run = load_run(conn, run_id, summary=True)
    stages = conn.execute(
        select(stage_summaries)
        .where(stage_summaries.c.run_pk == run.pk)
        .order_by(stage_summaries.c.stage_index)
    ).all()
    cells = run.row.gap_cells or {}
    totals = with_failed_conditions(run.row.totals, [s.outcomes for s in stages])
    return {
        "run": run.header(),
        "totals": totals,
        "gap_cells": _moving(run, cells.get("gap_cells", [])),
        "reporting_gap_cells": _moving(run, cells.get("reporting_gap_cells", [])),
        "stages": [
            {
                "stage": s.stage,
                "totals": s.totals,
                # JSONB does not keep key order; give the outcome table's order back.
                "outcomes": {o.label: s.outcomes[o.label] for o in STAGE_OUTCOMES},
                "rows": {o.label: s.rows[o.label] for o in STAGE_OUTCOMES},
                "flags": s.flags,
            }
            for s in stages
        ],
        "rerun": rerun(conn, run),
    }


def with_failed_conditions(
    totals: dict[str, Any], stage_outcomes: list[dict[str, int]]
) -> dict[str, Any]:
    """The totals with `failed_conditions`: why `reconciles` is false (empty when true)."""
    failed = failed_conditions(totals, breaker_counts(stage_outcomes))
    return {**totals, "failed_conditions": failed}


def _moving(run: RunInfo, cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cells that move the gap (zero cells are stored for their pages' totals)."""
    return [
        {**c, "sample": [run.decode_key(k) for k in c["sample"]], "causes": c.get("causes", [])}
        for c in cells
        if c["contribution"] != 0
    ]


def compare_command(run_a: str, run_b: str) -> str:
    return f"tracer compare {run_a} {run_b}"


def compare_path(run_a: str, run_b: str) -> str:
    return f"/api/v1/runs/{quote(run_a, safe='')}/compare/{quote(run_b, safe='')}"


def rerun(conn: Connection, run: RunInfo) -> dict[str, Any] | None:
    """For a rerun: the run it repeats, how many clients changed, how to see which."""
    if run.rerun_of is None:
        return None
    try:
        changed, note = compare(conn, run.rerun_of, run.run_id)["changed_keys"], None
    except TracerError as exc:
        changed, note = None, exc.message
    return {
        "of": run.rerun_of,
        "changed_keys": changed,
        "command": compare_command(run.rerun_of, run.run_id),
        "url": compare_path(run.rerun_of, run.run_id),
        "note": note,
    }
