"""The outcome table is data (tracer.outcomes.OUTCOME_RULES): the docs and the SQL follow it.

docs/semantics.md#outcomes is the contract; the README repeats its table. Both must say
exactly what the rules say, and every rule must translate to SQL the classifier can run.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tracer.classify import rule_sql
from tracer.outcomes import ENTRY_RULE, OUTCOME_RULES, STAGE_OUTCOMES, Outcome, Rule

ROOT = Path(__file__).resolve().parent.parent
HEADER = "| outcome | condition | meaning |"


def outcome_table(path: Path) -> list[tuple[str, str, str]]:
    lines = path.read_text().splitlines()
    start = lines.index(HEADER) + 2  # past the header and its | --- | line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        outcome, condition, meaning = (c.strip() for c in line.strip("|").split(" | "))
        rows.append((outcome.strip("`"), condition, meaning))
    return rows


@pytest.mark.parametrize("doc", ["docs/semantics.md", "README.md"])
def test_the_documented_table_is_the_rules(doc: str) -> None:
    expected = [(r.outcome.label, r.condition, r.meaning) for r in OUTCOME_RULES]
    assert outcome_table(ROOT / doc) == expected


def test_every_outcome_has_one_rule_in_enum_order() -> None:
    ruled = [ENTRY_RULE.outcome, *(r.outcome for r in OUTCOME_RULES)]
    assert ruled == list(STAGE_OUTCOMES)


def _first_match(rules: tuple[Rule, ...], counts: dict[str, int], fanout: bool) -> int:
    """Evaluate the generated SQL for one set of counts: the code of the first rule that holds."""
    columns = {
        "in": "i", "out": "o", "drop_rep": "r", "drop_ops": "p", "drop": "(r + p)", "grains": "g"
    }  # fmt: skip
    branches = [
        f"WHEN {sql} THEN {rule.outcome.value}"
        for rule in rules
        if (sql := rule_sql(rule, columns, fanout)) is not None
    ]
    query = f"SELECT CASE {' '.join(branches)} ELSE 0 END FROM (SELECT ? i, ? o, ? r, ? p, ? g)"
    args = [counts[n] for n in ("in", "out", "drop_rep", "drop_ops", "grains")]
    return duckdb.execute(query, args).fetchone()[0]


@pytest.mark.parametrize(
    ("counts", "fanout", "expected"),
    [
        ({"in": 1, "out": 1, "drop_rep": 0, "drop_ops": 0, "grains": 1}, False, Outcome.PASSED),
        ({"in": 1, "out": 3, "drop_rep": 0, "drop_ops": 0, "grains": 3}, True, Outcome.EXPANDED),
        ({"in": 1, "out": 3, "drop_rep": 0, "drop_ops": 0, "grains": 3}, False, Outcome.MULTIPLIED),
        ({"in": 1, "out": 3, "drop_rep": 0, "drop_ops": 0, "grains": 2}, True, Outcome.MULTIPLIED),
        ({"in": 3, "out": 1, "drop_rep": 0, "drop_ops": 0, "grains": 1}, False, Outcome.COLLAPSED),
        ({"in": 3, "out": 1, "drop_rep": 1, "drop_ops": 1, "grains": 1}, False,
         Outcome.PARTIALLY_DROPPED),
        ({"in": 3, "out": 1, "drop_rep": 1, "drop_ops": 0, "grains": 1}, False, Outcome.CONFLICT),
        ({"in": 1, "out": 0, "drop_rep": 1, "drop_ops": 1, "grains": 0}, False, Outcome.DROPPED),
        ({"in": 1, "out": 0, "drop_rep": 0, "drop_ops": 2, "grains": 0}, False,
         Outcome.DROPPED_UNREPORTED),
        ({"in": 2, "out": 0, "drop_rep": 0, "drop_ops": 0, "grains": 0}, False, Outcome.ORPHANED),
        ({"in": 0, "out": 2, "drop_rep": 0, "drop_ops": 0, "grains": 2}, False, Outcome.APPEARED),
        ({"in": 0, "out": 0, "drop_rep": 1, "drop_ops": 0, "grains": 0}, False,
         Outcome.PHANTOM_DROP),
    ],
)  # fmt: skip
def test_generated_sql_takes_the_first_matching_rule(
    counts: dict[str, int], fanout: bool, expected: Outcome
) -> None:
    assert _first_match(OUTCOME_RULES, counts, fanout) == expected.value


def test_a_first_stage_enters_before_every_rule() -> None:
    rules = (ENTRY_RULE, *OUTCOME_RULES)
    enters = {"in": 0, "out": 1, "drop_rep": 1, "drop_ops": 0, "grains": 1}
    assert _first_match(rules, enters, False) == Outcome.ENTERED.value
    phantom = {"in": 0, "out": 0, "drop_rep": 0, "drop_ops": 1, "grains": 0}
    assert _first_match(rules, phantom, False) == Outcome.PHANTOM_DROP.value


def test_an_unknown_count_in_a_clause_is_refused() -> None:
    bad = Rule(Outcome.PASSED, ("rows >= 1",), "")
    with pytest.raises(ValueError, match="unknown count 'rows'"):
        rule_sql(bad, {"in": "i"}, False)
