"""The reconciliation of a run: totals, the gaps explained, and per-stage outcome counts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from tracer.outcomes import STAGE_OUTCOMES
from tracer.queries.common import RunInfo, load_run
from tracer.tables import stage_summaries


def reconciliation(conn: Connection, run_id: str) -> dict[str, Any]:
    """The object `tracer reconciliation --json` prints; precomputed at classification."""
    run = load_run(conn, run_id, summary=True)
    stages = conn.execute(
        select(stage_summaries)
        .where(stage_summaries.c.run_pk == run.pk)
        .order_by(stage_summaries.c.stage_index)
    ).all()
    cells = run.row.gap_cells or {}
    return {
        "run": run.header(),
        "totals": run.row.totals,
        "gap_cells": _decoded(run, cells.get("gap_cells", [])),
        "reporting_gap_cells": _decoded(run, cells.get("reporting_gap_cells", [])),
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
    }


def _decoded(run: RunInfo, cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**c, "sample": [run.decode_key(k) for k in c["sample"]]} for c in cells]
