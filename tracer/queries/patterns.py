"""A key's stages through its pattern: `key_outcomes.pattern` numbers one of the run's
`key_patterns`, which hold the per-stage text (tracer.outcomes.parse_stage_cells) and
the one-letter outcome codes. A run has a few dozen patterns: lists read them apart and
keys by pattern number (joined into a list's query, the planner crossed every row with
every pattern)."""

from __future__ import annotations

from sqlalchemy import Connection, select

from tracer.tables import key_patterns


def stages_by_pattern(conn: Connection, run_pk: int) -> dict[int, str]:
    """The run's patterns and their stages."""
    p = key_patterns.c
    query = select(p.pattern, p.stages).where(p.run_pk == run_pk)
    return {pattern: stages for pattern, stages in conn.execute(query)}
