"""Stage graphs beyond a line (docs/semantics.md#splits-and-merges)."""

from __future__ import annotations

from tests.pipelines import RunBuilder

CLIENTS = [{"client_id": i} for i in range(1, 7)]


def only(*ids: int) -> list[dict[str, int]]:
    return [{"client_id": i} for i in ids]


def test_merge_sums_the_rows_of_both_parents(build: RunBuilder) -> None:
    # "in(k) at a merge is the total of k's rows in every parent's output."
    run = build.run(
        stages=[
            {"name": "src"},
            {"name": "left", "parents": ["src"]},
            {"name": "right", "parents": ["src"]},
            {"name": "merge", "parents": ["left", "right"]},
        ],
        outputs={
            "src": CLIENTS,
            "left": only(1, 2, 3),
            "right": only(1, 4, 5, 6),
            "merge": only(1, 1, 2, 3, 4, 5, 6),
        },
    )
    journey = build.journey(run, 1)
    merge = next(s for s in journey["stages"] if s["stage"] == "merge")
    assert (merge["rows_in"], merge["rows_out"], merge["outcome"]) == (2, 2, "passed")
    # A copy split hands every child all rows: 2 is missing from `right` -> orphaned there,
    # yet it reaches the final output through `left`, so it is targeted.
    assert build.outcome(run, "right", 2) == "orphaned"
    assert build.journey(run, 2)["final_outcome"] == "targeted"


def test_merge_that_loses_one_parents_copy_is_collapsed(build: RunBuilder) -> None:
    run = build.run(
        stages=[
            {"name": "src"},
            {"name": "left", "parents": ["src"]},
            {"name": "right", "parents": ["src"]},
            {"name": "merge", "parents": ["left", "right"]},
        ],
        outputs={"src": only(1), "left": only(1), "right": only(1), "merge": only(1)},
    )
    assert build.outcome(run, "merge", 1) == "collapsed"


def test_routed_split_counts_a_parent_row_only_at_the_branch_it_went_to(
    build: RunBuilder,
) -> None:
    # "For a child S of a routed parent P, P's rows for k count in in(k) at S only where k has
    # output or traceability rows at S, or at none of P's children; a key routed to a
    # sibling has no outcome at S."
    trace = [{"client_id": 5, "reason": "no_phone"}]
    run = build.run(
        stages=[
            {"name": "split", "split": "route"},
            {"name": "email", "parents": ["split"]},
            {"name": "sms", "parents": ["split"]},
            {"name": "merge", "parents": ["email", "sms"]},
        ],
        outputs={
            "split": CLIENTS,
            "email": only(1, 2, 3),
            "sms": only(3, 4),  # 3 shows up in both branches
            "merge": only(1, 2, 3, 3, 4),
        },
        trace={"t": ({"reported": True, "stage": "sms", "reason_column": "reason"}, trace)},
    )
    assert build.outcome(run, "email", 1) == "passed"
    assert build.outcome(run, "sms", 1) is None  # routed to the sibling: no outcome
    assert build.outcome(run, "sms", 5) == "dropped"
    assert build.outcome(run, "email", 5) is None
    # 6 reached no branch: orphaned at every branch it was offered to, counted once.
    assert build.outcome(run, "email", 6) == "orphaned"
    assert build.outcome(run, "sms", 6) == "orphaned"
    report = build.report(run)
    assert report["totals"]["orphaned"] == 1
    # 3 went to both branches and is passed on twice: the merge shows a grain violation.
    merge = next(s for s in build.journey(run, 3)["stages"] if s["stage"] == "merge")
    assert (merge["rows_in"], merge["rows_out"], merge["grain_violation"]) == (2, 2, True)
    assert report["stages"][3]["flags"]["grain_violation"] == 1


def test_multiple_final_outputs_any_row_in_one_is_targeted(build: RunBuilder) -> None:
    # "targeted if k has at least one row in a final output (a stage with no children)"
    run = build.run(
        stages=[
            {"name": "src"},
            {"name": "email", "parents": ["src"]},
            {"name": "sms", "parents": ["src"]},
        ],
        outputs={"src": only(1, 2, 3), "email": only(1), "sms": only(2)},
    )
    report = build.report(run)
    assert report["totals"]["targeted"] == 2
    assert build.journey(run, 3)["final_outcome"] == "orphaned"


def test_target_even_after_leaving_and_reappearing(build: RunBuilder) -> None:
    # "targeted if k has at least one row in a final output, even after leaving and reappearing"
    run = build.run(
        stages=[{"name": "a"}, {"name": "b"}, {"name": "c"}],
        outputs={"a": only(1, 2), "b": only(2), "c": only(1, 2)},
    )
    journey = build.journey(run, 1)
    assert journey["final_outcome"] == "targeted"
    assert [a["anomaly"] for a in journey["anomalies"]] == ["orphaned", "appeared"]
