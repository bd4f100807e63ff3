"""Every row of the outcome table of docs/semantics.md#outcomes, one test each.

Each test builds a two-stage pipeline `a -> b` where client 1 has the rows the
row's condition describes at `b`, ingests it into real Postgres, and reads the
outcome back through the journey query.
"""

from __future__ import annotations

from typing import Any

from tests.pipelines import RunBuilder

REPORTED = {"reported": True, "stage": "b", "reason_column": "reason"}
OPERATIONAL = {"reported": False, "stage": "b", "reason_column": "reason"}


def rows(client: int, n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"client_id": client, "offer": f"o{i}", **extra} for i in range(n)]


def outcome_at_b(
    build: RunBuilder,
    a: list[dict[str, Any]],
    b: list[dict[str, Any]],
    reported: int = 0,
    operational: int = 0,
    b_spec: dict[str, Any] | None = None,
) -> tuple[str | None, str]:
    """Outcome of client 1 at stage b, and the run id."""
    # Client 2 passes everywhere so every dataset has at least one row.
    a = [*a, {"client_id": 2, "offer": "o0"}]
    b = [*b, {"client_id": 2, "offer": "o0"}]
    trace = {
        "rep": (REPORTED, [{"client_id": 1, "reason": "excluded"}] * reported),
        "ops": (OPERATIONAL, [{"client_id": 1, "reason": "blocked"}] * operational),
    }
    schemas = {"rep": _trace_schema(), "ops": _trace_schema()}
    run = build.run(
        stages=[{"name": "a"}, {"name": "b", **(b_spec or {})}],
        outputs={"a": a, "b": b},
        trace=trace,
        schemas=schemas,
    )
    return build.outcome(run, "b", 1), run


def _trace_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("client_id", pa.int64()), ("reason", pa.string())])


def test_entered_every_key_with_output_at_the_first_stage(build: RunBuilder) -> None:
    # "At the first stage every key with out >= 1 is `entered`."
    _, run = outcome_at_b(build, rows(1, 2), rows(1, 2))
    assert build.outcome(run, "a", 1) == "entered"
    assert build.report(run)["stages"][0]["outcomes"]["entered"] == 2


def test_passed_when_out_equals_in_and_nothing_dropped(build: RunBuilder) -> None:
    # passed | in >= 1, out = in, drop = 0
    assert outcome_at_b(build, rows(1, 2), rows(1, 2))[0] == "passed"


def test_expanded_when_fanout_expected_and_rows_distinct_on_grain(build: RunBuilder) -> None:
    # expanded | in >= 1, out > in, drop = 0, S expects fan-out, rows distinct on S's grain
    spec = {"grain": ["client_id", "offer"], "fanout": "expected"}
    assert outcome_at_b(build, rows(1, 1), rows(1, 3), b_spec=spec)[0] == "expanded"


def test_multiplied_when_fanout_not_expected(build: RunBuilder) -> None:
    # multiplied | in >= 1, out > in, and not `expanded`
    outcome, run = outcome_at_b(build, rows(1, 1), rows(1, 3))
    assert outcome == "multiplied"
    stage_b = build.report(run)["stages"][1]
    assert stage_b["rows"]["multiplied"] == {
        "rows_in": 1,
        "rows_out": 3,
        "rows_dropped": 0,
    }  # extra rows = out - in


def test_multiplied_when_expected_fanout_repeats_a_grain_value(build: RunBuilder) -> None:
    # expanded requires the key's rows to be distinct on the grain; otherwise multiplied.
    spec = {"grain": ["client_id", "offer"], "fanout": "expected"}
    b = [{"client_id": 1, "offer": "o0"}, {"client_id": 1, "offer": "o0"}]
    outcome, run = outcome_at_b(build, rows(1, 1), b, b_spec=spec)
    assert outcome == "multiplied"
    assert build.journey(run, 1)["stages"][1]["grain_violation"] is True


def test_multiplied_when_fanout_comes_with_a_drop(build: RunBuilder) -> None:
    # expanded needs drop = 0; out > in with a drop is multiplied (the next matching row).
    spec = {"grain": ["client_id", "offer"], "fanout": "expected"}
    assert outcome_at_b(build, rows(1, 1), rows(1, 2), reported=1, b_spec=spec)[0] == "multiplied"


def test_collapsed_when_rows_merge_without_reason(build: RunBuilder) -> None:
    # collapsed | in >= 2, 1 <= out < in, drop = 0
    assert outcome_at_b(build, rows(1, 3), rows(1, 1))[0] == "collapsed"


def test_dropped_when_gone_with_a_reported_reason(build: RunBuilder) -> None:
    # dropped | in >= 1, out = 0, drop_rep >= 1
    assert outcome_at_b(build, rows(1, 1), [], reported=1)[0] == "dropped"


def test_dropped_wins_over_unreported_when_both_sources_log_it(build: RunBuilder) -> None:
    # First matching row wins: drop_rep >= 1 makes it `dropped` whatever drop_ops is.
    assert outcome_at_b(build, rows(1, 1), [], reported=1, operational=1)[0] == "dropped"


def test_dropped_unreported_when_only_an_operational_source_logs_it(build: RunBuilder) -> None:
    # dropped_unreported | in >= 1, out = 0, drop_rep = 0, drop_ops >= 1
    outcome, run = outcome_at_b(build, rows(1, 1), [], operational=1)
    assert outcome == "dropped_unreported"
    journey = build.journey(run, 1)
    assert journey["final_outcome"] == "dropped_unreported"
    assert journey["stages"][1]["reasons"] == [
        {"source": "ops", "reason": "blocked", "rows": 1, "reported": False}
    ]


def test_partially_dropped_when_out_plus_drop_equals_in(build: RunBuilder) -> None:
    # partially_dropped | in >= 2, 1 <= out < in, out + drop = in
    assert outcome_at_b(build, rows(1, 3), rows(1, 1), reported=2)[0] == "partially_dropped"


def test_orphaned_when_gone_without_any_reason(build: RunBuilder) -> None:
    # orphaned | in >= 1, out = 0, drop = 0
    outcome, run = outcome_at_b(build, rows(1, 1), [])
    assert outcome == "orphaned"
    assert build.journey(run, 1)["final_outcome"] == "orphaned"


def test_conflict_when_continued_and_logged_as_dropped(build: RunBuilder) -> None:
    # conflict | out >= 1 and drop >= 1, and not partially_dropped
    outcome, run = outcome_at_b(build, rows(1, 1), rows(1, 1), reported=1)
    assert outcome == "conflict"
    assert build.journey(run, 1)["final_outcome"] == "targeted"


def test_conflict_when_out_plus_drop_exceeds_in(build: RunBuilder) -> None:
    # in=3, out=1, drop=1: not collapsed (drop > 0), not partially dropped (1+1 != 3).
    assert outcome_at_b(build, rows(1, 3), rows(1, 1), reported=1)[0] == "conflict"


def test_appeared_when_a_key_has_no_ancestor(build: RunBuilder) -> None:
    # appeared | in = 0, out >= 1 (S is not a first stage)
    outcome, run = outcome_at_b(build, [], rows(1, 1))
    assert outcome == "appeared"
    journey = build.journey(run, 1)
    assert journey["final_outcome"] == "targeted" and journey["entered"] is False
    assert {"stage": "b", "anomaly": "appeared"} in journey["anomalies"]


def test_phantom_drop_when_a_trace_row_names_a_key_that_never_reached_the_stage(
    build: RunBuilder,
) -> None:
    # phantom_drop | in = 0, out = 0, drop >= 1; final outcome never_entered
    outcome, run = outcome_at_b(build, [], [], reported=1)
    assert outcome == "phantom_drop"
    assert build.journey(run, 1)["final_outcome"] == "never_entered"
    assert build.report(run)["totals"]["never_entered"] == 1


def test_no_outcome_where_the_key_has_no_rows(build: RunBuilder) -> None:
    # "Every (S, k) with in + out + drop > 0 gets exactly one outcome": none otherwise.
    run = build.run(
        stages=[{"name": "a"}, {"name": "b"}, {"name": "c"}],
        outputs={"a": rows(1, 1) + rows(2, 1), "b": rows(2, 1), "c": rows(2, 1)},
    )
    assert build.outcome(run, "c", 1) is None
    assert [s["stage"] for s in build.journey(run, 1)["stages"]] == ["a", "b"]
