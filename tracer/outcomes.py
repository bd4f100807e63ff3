"""The outcome vocabulary of lineage-semantics.md, with the codes stored in Postgres.

One place for names and codes so the classifier's SQL, the queries and the
CLI can never disagree about what code 7 means.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple


class Outcome(IntEnum):
    """Per (stage, key) outcome; the order of the table is the first-match order."""

    ENTERED = 1
    PASSED = 2
    EXPANDED = 3
    MULTIPLIED = 4
    COLLAPSED = 5
    DROPPED = 6
    DROPPED_UNREPORTED = 7
    PARTIALLY_DROPPED = 8
    ORPHANED = 9
    CONFLICT = 10
    APPEARED = 11
    PHANTOM_DROP = 12
    # Not an outcome of the table but a per-key stage flag, listed with the anomalies.
    GRAIN_VIOLATION = 13

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, name: str) -> Outcome:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            known = ", ".join(o.label for o in cls)
            raise ValueError(f"unknown outcome {name!r}; known: {known}") from None


STAGE_OUTCOMES: tuple[Outcome, ...] = tuple(o for o in Outcome if o is not Outcome.GRAIN_VIOLATION)
"""Outcomes a (stage, key) can have: every one is reported per stage, zeros included."""

UNREMARKABLE: frozenset[Outcome] = frozenset({Outcome.ENTERED, Outcome.PASSED})
"""Outcomes not stored in the anomaly list: they are the bulk of every run."""

RUN_BREAKERS: tuple[Outcome, ...] = (
    Outcome.ORPHANED,
    Outcome.MULTIPLIED,
    Outcome.COLLAPSED,
    Outcome.APPEARED,
    Outcome.CONFLICT,
    Outcome.PHANTOM_DROP,
    Outcome.DROPPED_UNREPORTED,
)
"""A run reconciles only when none of these occurs (lineage-semantics.md, Reconciliation)."""


class Final(IntEnum):
    """Final outcome of a key's journey in a run."""

    TARGETED = 1
    DROPPED = 2
    DROPPED_UNREPORTED = 3
    ORPHANED = 4
    NEVER_ENTERED = 5

    @property
    def label(self) -> str:
        return self.name.lower()


JOURNEY_ANOMALIES: frozenset[Outcome] = frozenset(
    {
        Outcome.MULTIPLIED,
        Outcome.COLLAPSED,
        Outcome.CONFLICT,
        Outcome.APPEARED,
        Outcome.PHANTOM_DROP,
        Outcome.DROPPED_UNREPORTED,
        Outcome.ORPHANED,
        Outcome.GRAIN_VIOLATION,
    }
)
"""What a journey carries as anomalies met (lineage-semantics.md, A client's journey)."""


class StageCell(NamedTuple):
    """One key at one stage, as stored in `key_outcomes.stages`."""

    outcome: Outcome
    rows_in: int
    rows_out: int
    drop_rep: int
    drop_ops: int
    grain_violation: bool


def parse_stage_cells(text: str) -> list[StageCell | None]:
    """Decode `key_outcomes.stages`; None where the key has no outcome at that stage."""
    cells: list[StageCell | None] = []
    for part in text.split(";"):
        if not part:
            cells.append(None)
            continue
        c, i, o, r, p, g = (int(v) for v in part.split(","))
        cells.append(StageCell(Outcome(c), i, o, r, p, bool(g)))
    return cells
