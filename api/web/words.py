"""What the pages call things: outcomes, gap cells and final outcomes in words for people.

The meanings come from tracer.outcomes (the outcome table of docs/semantics.md), so a
page never explains an outcome differently from the contract.
"""

from __future__ import annotations

from typing import Any

from tracer.outcomes import ENTRY_RULE, OUTCOME_RULES, RUN_BREAKERS, Outcome

MEANING: dict[str, str] = {
    Outcome.ENTERED.label: ENTRY_RULE.meaning,
    **{rule.outcome.label: rule.meaning for rule in OUTCOME_RULES},
    Outcome.GRAIN_VIOLATION.label: "more than one row with the same values on the stage's grain",
}

NAME: dict[str, str] = {
    "entered": "entered",
    "passed": "passed",
    "expanded": "expanded",
    "multiplied": "multiplied",
    "collapsed": "collapsed",
    "dropped": "dropped (reported)",
    "dropped_unreported": "dropped (operational only)",
    "partially_dropped": "partially dropped",
    "orphaned": "orphaned",
    "conflict": "conflict",
    "appeared": "appeared",
    "phantom_drop": "phantom drop",
    "grain_violation": "grain violation",
    "targeted": "targeted",
    "never_entered": "never entered",
}

BREAKERS = frozenset(o.label for o in RUN_BREAKERS)

STAGE_COLUMNS: tuple[str, ...] = (
    "dropped",
    "dropped_unreported",
    "orphaned",
    "multiplied",
    "collapsed",
    "appeared",
    "conflict",
    "phantom_drop",
    "passed",
    "expanded",
    "partially_dropped",
)
"""Outcome columns of the per-stage table after "in" and "continued": the manual
reconciliation's order (docs/semantics.md#per-stage), then the unremarkable ones."""

ANOMALY_OUTCOMES: tuple[str, ...] = (
    *(o.label for o in RUN_BREAKERS),
    "grain_violation",
    "dropped",
    "partially_dropped",
    "expanded",
)
"""Outcomes the anomaly list can be asked for (all but entered and passed), worst first."""

CELL_WORDS: dict[str, str] = {
    "lost": "entered, but neither targeted nor traced",
    "counted_twice": "entered, targeted and also traced as dropped: counted twice",
    "targeted_without_entering": "targeted without having entered",
    "traced_without_entering": "traced as dropped without having entered",
    "targeted_and_traced_without_entering": "targeted and traced without having entered",
    "targeted": "entered and targeted",
    "traced": "entered and traced",
    "neither": "neither entered, targeted nor traced",
}


def key_text(key: dict[str, Any]) -> str:
    """`client_id 42`, or `branch LIS, client_no 42` for a composite key."""
    return ", ".join(f"{column} {value}" for column, value in key.items())


def key_value(key: dict[str, Any]) -> str:
    """The key as typed into the search box: `42`, or `LIS, 42`."""
    return ", ".join(str(value) for value in key.values())
