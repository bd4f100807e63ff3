"""A key's stages through its pattern: `key_outcomes.pattern` numbers one of the run's
`key_patterns`, which hold the per-stage text (tracer.outcomes.parse_stage_cells) and
the one-letter outcome codes.

A run has a few dozen patterns, and a classification's never change (a new one is
another `classified_at`; migration 0008 numbers them as classification does), so each
process keeps those of the runs it last read, and a query reads keys by pattern number.
Joined into a lookup, the patterns' partitions cost 0.3 ms of planning a journey and
0.5 ms a history at 1M clients; joined into a list's query, the planner crossed every
row with every pattern.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy import Connection, select

from tracer.queries.common import RunInfo
from tracer.tables import key_patterns

KEPT_RUNS = 256
"""Runs whose patterns a process keeps (a few kB each), the least recently read dropped."""
_KEPT: OrderedDict[tuple[int, Any], dict[int, str]] = OrderedDict()
_LOCK = threading.Lock()


def run_patterns(conn: Connection, run: RunInfo) -> dict[int, str]:
    """The stages of each pattern of the run's published classification (`run` as read in
    the caller's snapshot, under the read lock)."""
    kept = (run.pk, run.classified_at)
    with _LOCK:
        found = _KEPT.get(kept)
        if found is not None:
            _KEPT.move_to_end(kept)
            return found
    p = key_patterns.c
    query = select(p.pattern, p.stages).where(p.run_pk == run.pk)
    found = {pattern: stages for pattern, stages in conn.execute(query)}
    with _LOCK:
        _KEPT[kept] = found
        while len(_KEPT) > KEPT_RUNS:
            _KEPT.popitem(last=False)
    return found
