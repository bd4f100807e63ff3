"""The outcome vocabulary and the outcome table of docs/semantics.md#outcomes, as data.

One place for names, codes and rules, so the classifier's SQL (generated from
`OUTCOME_RULES`), the queries, the CLI and the documentation can never disagree
about what code 7 means or when a key gets it.
"""

from __future__ import annotations

from dataclasses import dataclass
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


# Clauses that are not comparisons of counts: a property of the stage, and the grain check.
FANOUT_EXPECTED = "S expects fan-out"
GRAIN_DISTINCT = "rows distinct on S's grain"
COUNT_VARIABLES = ("in", "out", "drop", "drop_rep", "drop_ops")
"""What a comparison clause may name (docs/semantics.md#counts); drop = drop_rep + drop_ops."""


@dataclass(frozen=True)
class Rule:
    """One row of the outcome table: the outcome a (stage, key) gets when every clause holds.

    Clauses are comparisons of counts (`in >= 2`, `1 <= out < in`, `out + drop = in`)
    or one of the named clauses above. `note` states what the first-match order
    already ensures; it is documentation, not a clause.
    """

    outcome: Outcome
    clauses: tuple[str, ...]
    meaning: str
    note: str = ""

    @property
    def condition(self) -> str:
        """The condition as docs/semantics.md and the README write it."""
        return ", ".join(self.clauses) + (f" ({self.note})" if self.note else "")


OUTCOME_RULES: tuple[Rule, ...] = (
    Rule(Outcome.PASSED, ("in >= 1", "out = in", "drop = 0"), "continued unchanged"),
    Rule(
        Outcome.EXPANDED,
        ("in >= 1", "out > in", "drop = 0", FANOUT_EXPECTED, GRAIN_DISTINCT),
        "legitimate fan-out, not an anomaly",
    ),
    Rule(
        Outcome.MULTIPLIED,
        ("in >= 1", "out > in"),
        "one-to-many join or duplication; extra rows = out - in",
        note="and not `expanded`",
    ),
    Rule(
        Outcome.COLLAPSED,
        ("in >= 2", "1 <= out < in", "drop = 0"),
        "rows merged or deduplicated, with no reason logged",
    ),
    Rule(
        Outcome.DROPPED,
        ("in >= 1", "out = 0", "drop_rep >= 1"),
        "left, with a reason that reporting shows",
    ),
    Rule(
        Outcome.DROPPED_UNREPORTED,
        ("in >= 1", "out = 0", "drop_rep = 0", "drop_ops >= 1"),
        "left, with a reason only in an operational source (a hidden dropout)",
    ),
    Rule(
        Outcome.PARTIALLY_DROPPED,
        ("in >= 2", "1 <= out < in", "out + drop = in"),
        "some rows left with a reason; the rest continued",
    ),
    Rule(
        Outcome.ORPHANED,
        ("in >= 1", "out = 0", "drop = 0"),
        "vanished with no reason anywhere: the worst case",
    ),
    Rule(
        Outcome.CONFLICT,
        ("out >= 1", "drop >= 1"),
        "both continued and logged as dropped (counted twice)",
        note="and not `partially_dropped`",
    ),
    Rule(
        Outcome.APPEARED,
        ("in = 0", "out >= 1"),
        "a key with no ancestor: an unexpected increase",
        note="S is not a first stage",
    ),
    Rule(
        Outcome.PHANTOM_DROP,
        ("in = 0", "out = 0", "drop >= 1"),
        "a traceability row for a key that never reached S",
    ),
)
"""The outcome table in first-match order (docs/semantics.md#outcomes)."""

ENTRY_RULE = Rule(
    Outcome.ENTERED, ("out >= 1",), "entered the run", note="at a first stage, before every rule"
)
"""At a first stage (in = 0 there) this rule comes first; the table follows it."""

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
"""A run reconciles only when none of these occurs (docs/semantics.md#reconciles)."""


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
"""What a journey carries as anomalies met (docs/semantics.md#journeys)."""


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
