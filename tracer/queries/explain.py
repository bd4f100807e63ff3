"""What a list item says about its key, so nobody has to open each journey to read it:
the reasons given at a stage, where the key left, and its final outcome in one sentence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from tracer.outcomes import Final, Outcome, StageCell
from tracer.queries.common import RunInfo
from tracer.tables import datasets, key_reasons

Reasons = dict[tuple[str, int], list[dict[str, Any]]]
"""(stored key, stage index) -> the reasons logged for the key at that stage."""


def reasons_of(conn: Connection, run: RunInfo, keys: Sequence[str]) -> Reasons:
    """Every reason logged for these keys (a page of them), by key and stage: one query."""
    found: Reasons = {}
    if not keys:
        return found
    r = key_reasons.c
    rows = conn.execute(
        select(r.key, r.stage, r.reason, r.rows, datasets.c.name)
        .join(datasets, datasets.c.id == r.dataset_id)
        .where(r.run_pk == run.pk, r.key.in_(list(keys)))
        .order_by(r.key, r.stage, datasets.c.name, r.reason)
    )
    for row in rows:
        found.setdefault((row.key, row.stage), []).append(
            reason_item(run, row.name, row.reason, row.rows)
        )
    return found


def reason_item(run: RunInfo, source: str, reason: str | None, rows: int) -> dict[str, Any]:
    """One reason logged for a key at a stage, as every answer shows it."""
    return {
        "source": source,
        "reason": reason,
        "rows": rows,
        "reported": run.layout.reported[source],
    }


def left_at(run: RunInfo, cells: Sequence[StageCell | None]) -> dict[str, str] | None:
    """The last stage the key left (in >= 1, out = 0) and its outcome there; None if it
    never left (docs/semantics.md#journeys: the stage that gave a final outcome)."""
    for name, cell in reversed(list(zip(run.stages, cells, strict=True))):
        if cell is not None and cell.rows_in >= 1 and cell.rows_out == 0:
            return {"stage": name, "outcome": cell.outcome.label}
    return None


def summary(run: RunInfo, final: Final, stages: list[dict[str, Any]]) -> str:
    """The journey's final outcome in one sentence, from its stages (with their reasons).

    e.g. "left at exclusions: credit_default, logged in trace_main, visible in reporting".
    """
    present = {s["stage"]: s for s in stages}
    if final is Final.TARGETED:
        reached = [f for f in run.layout.finals if present.get(f, {}).get("rows_out", 0) >= 1]
        return f"targeted: in the final output of {_and(reached or list(run.layout.finals))}"
    if final is Final.NEVER_ENTERED:
        first = stages[0] if stages else None
        where = f", first at {first['stage']} ({first['outcome']})" if first else ""
        return f"never entered: only traceability rows, no output row anywhere{where}"
    leaving = [s for s in stages if s["rows_in"] >= 1 and s["rows_out"] == 0][-1]
    if final is Final.ORPHANED:
        return f"vanished at {leaving['stage']}: no reason logged anywhere"
    return f"left at {leaving['stage']}: {logged(leaving['reasons'])}"


def logged(reasons: list[dict[str, Any]]) -> str:
    """`credit_default, logged in trace_main, visible in reporting`: reasons, where, who sees."""
    if not reasons:
        return "no reason logged"
    texts = list(dict.fromkeys(str(r["reason"]) if r["reason"] is not None else "no reason"
                               for r in reasons))  # fmt: skip
    sources = list(dict.fromkeys(r["source"] for r in reasons))
    reported = {r["source"] for r in reasons if r["reported"]}
    if len(reported) == len(sources):
        seen = "visible in reporting"
    elif not reported:
        seen = "not visible in reporting"
    else:
        seen = f"visible in reporting through {_and(sorted(reported))} only"
    return f"{_and(texts)}, logged in {_and(sources)}, {seen}"


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def outcome_label(code: int | None) -> str | None:
    return Outcome(code).label if code else None
