"""Run totals and the gap explained (docs/semantics.md#reconciliation)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.pipelines import RunBuilder
from tracer.errors import NotFoundError, TracerError
from tracer.queries.anomalies import anomalies, gap_keys
from tracer.queries.journey import history
from tracer.store import classify_step, delete_run, ingest_step, stored_manifest, submit_run


def only(*ids: int) -> list[dict[str, int]]:
    return [{"client_id": i} for i in ids]


def gap_run(build: RunBuilder, run_id: str | None = None) -> str:
    """10 clients enter; 1-5 targeted; 6 dropped (reported); 7 dropped operational-only;
    8 orphaned; 9 targeted and logged as dropped (conflict: counted twice); 10 collapsed
    into the target; 11 appears in output without entering; 12 only in a trace (phantom)."""
    rep = [{"client_id": i, "reason": "r"} for i in (6, 9, 12)]
    ops = [{"client_id": 7, "reason": "blocked"}]
    return build.run(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={
            "a": only(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10),
            "b": only(1, 2, 3, 4, 5, 9, 10, 11),
        },
        trace={
            "rep": ({"reported": True, "stage": "b", "reason_column": "reason"}, rep),
            "ops": ({"reported": False, "stage": "b", "reason_column": "reason"}, ops),
        },
        run_id=run_id,
    )


def test_totals_and_residual(build: RunBuilder) -> None:
    totals = build.report(gap_run(build))["totals"]
    assert totals["entered"] == 10
    assert totals["targeted"] == 8  # 1-5, 9, 10 and 11 (appeared)
    assert (totals["dropped"], totals["dropped_unreported"], totals["orphaned"]) == (1, 1, 1)
    assert totals["never_entered"] == 1  # 12
    # residual = entered - targeted - dropped - dropped_unreported - orphaned, shown not hidden
    assert totals["residual"] == 10 - 8 - 1 - 1 - 1 == -1
    assert totals["traced"] == 4 and totals["traced_reported"] == 3
    assert totals["reconciles"] is False


def test_gap_cells_sum_to_the_gap_with_the_keys_behind_them(build: RunBuilder) -> None:
    # "The cells, with their key counts and keys, sum to the gap."
    run = gap_run(build)
    report = build.report(run)
    totals = report["totals"]
    assert totals["gap"] == 10 - 8 - 4 == -2
    assert totals["reporting_gap"] == 10 - 8 - 3 == -1
    for name, gap in (
        ("gap_cells", totals["gap"]),
        ("reporting_gap_cells", totals["reporting_gap"]),
    ):
        assert sum(c["contribution"] for c in report[name]) == gap
    cells = {c["cell"]: c for c in report["gap_cells"]}
    # lost: entered, neither targeted nor traced (+1 each): 8 (orphaned)
    assert cells["lost"]["keys"] == 1 and cells["lost"]["sample"] == [{"client_id": 8}]
    # counted twice: targeted and traced (-1): 9
    assert cells["counted_twice"]["sample"] == [{"client_id": 9}]
    assert cells["targeted_without_entering"]["sample"] == [{"client_id": 11}]
    assert cells["traced_without_entering"]["sample"] == [{"client_id": 12}]
    reporting = {c["cell"]: c for c in report["reporting_gap_cells"]}
    # In reporting, 7 (operational-only drop) is lost as well.
    assert reporting["lost"]["keys"] == 2
    with build.engine.connect() as conn:
        lost = gap_keys(conn, run, "lost", reporting=True)
    # Each key says why it is there: its cause, the reasons logged there, its final outcome.
    assert lost["items"] == [
        {
            "key": {"client_id": 7},
            "stage": "b",
            "outcome": "dropped_unreported",
            "reasons": [{"source": "ops", "reason": "blocked", "rows": 1, "reported": False}],
            "final_outcome": "dropped_unreported",
        },
        {
            "key": {"client_id": 8},
            "stage": "b",
            "outcome": "orphaned",
            "reasons": [],
            "final_outcome": "orphaned",
        },
    ]
    assert lost["total"] == 2


def test_every_gap_cell_is_split_by_cause(build: RunBuilder) -> None:
    """docs/semantics.md#causes: each key of a cell has one (stage, outcome); they sum to it."""
    report = build.report(gap_run(build))
    causes = {c["cell"]: c["causes"] for c in report["gap_cells"]}
    assert causes == {
        "lost": [{"stage": "b", "outcome": "orphaned", "keys": 1}],
        "counted_twice": [{"stage": "b", "outcome": "conflict", "keys": 1}],
        "targeted_without_entering": [{"stage": "b", "outcome": "appeared", "keys": 1}],
        "traced_without_entering": [{"stage": "b", "outcome": "phantom_drop", "keys": 1}],
    }
    reporting = {c["cell"]: c["causes"] for c in report["reporting_gap_cells"]}
    assert reporting["lost"] == [
        {"stage": "b", "outcome": "dropped_unreported", "keys": 1},
        {"stage": "b", "outcome": "orphaned", "keys": 1},
    ]
    for cell in report["gap_cells"] + report["reporting_gap_cells"]:
        assert sum(c["keys"] for c in cell["causes"]) == cell["keys"]


def test_a_clean_run_reconciles(build: RunBuilder) -> None:
    rep = [{"client_id": 3, "reason": "r"}]
    run = build.run(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": only(1, 2, 3), "b": only(1, 2)},
        trace={"rep": ({"reported": True, "stage": "b", "reason_column": "reason"}, rep)},
    )
    report = build.report(run)
    assert report["totals"]["gap"] == 0 and report["totals"]["reconciles"] is True
    assert report["gap_cells"] == []


def test_anomalies_are_keyset_paginated(build: RunBuilder) -> None:
    run = build.run(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": only(*range(1, 26)), "b": only(1)},
    )
    seen: list[int] = []
    token = None
    with build.engine.connect() as conn:
        while True:
            page = anomalies(conn, run, "orphaned", stage="b", limit=7, after=token)
            seen += [item["key"]["client_id"] for item in page["items"]]
            token = page["next"]
            if token is None:
                break
        with pytest.raises(TracerError, match="not an anomaly"):
            anomalies(conn, run, "passed")
        with pytest.raises(TracerError, match="unknown outcome"):
            anomalies(conn, run, "vanished")
    assert sorted(seen) == list(range(2, 26)) and len(seen) == len(set(seen))


def test_history_lists_every_run_with_the_final_outcome(build: RunBuilder) -> None:
    first = gap_run(build, run_id="hist-1")
    second = build.run(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": only(8), "b": only(8)},
        run_id="hist-2",
    )
    with build.engine.connect() as conn:
        found = history(conn, [8])["items"]
    by_run = {h["run"]["run_id"]: h["final_outcome"] for h in found}
    assert by_run[first] == "orphaned" and by_run[second] == "targeted"


def test_delete_run_drops_its_partitions_and_chunks(build: RunBuilder) -> None:
    run = gap_run(build)
    with build.engine.connect() as conn:
        pk = conn.execute(text("SELECT pk FROM runs WHERE run_id = :r"), {"r": run}).scalar()
        manifest = stored_manifest(conn, pk)
    submitted = submit_run(build.engine, manifest)  # posted again, as jobs: chunks are stored
    for dataset_id in submitted.dataset_ids:
        ingest_step(build.engine, dataset_id)
    classify_step(build.engine, pk)
    names = [f"{t}_r{pk}" for t in ("key_outcomes", "anomalies", "key_reasons", "key_patterns")]

    def stored() -> tuple[int, int]:
        with build.engine.connect() as conn:
            tables = conn.execute(
                text("SELECT count(*) FROM pg_class WHERE relname = ANY(:n)"), {"n": names}
            ).scalar()
            chunks = conn.execute(
                text(
                    "SELECT count(*) FROM dataset_chunks c JOIN datasets d ON d.id = c.dataset_id "
                    "WHERE d.run_pk = :p"
                ),
                {"p": pk},
            ).scalar()
        return tables, chunks

    assert stored() == (4, 4)  # four run partitions, one chunk per dataset
    delete_run(build.engine, run)
    assert stored() == (0, 0)
    with pytest.raises(NotFoundError):
        build.report(run)
    with pytest.raises(NotFoundError):
        delete_run(build.engine, run)
