"""Comparing runs (docs/semantics.md#comparing-runs) on the bank demo and its rerun: the
rerun's fix drops a known set of clients at the last stage, and the comparison must find
exactly them, in the right cell, first differing at the right stage."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from sqlalchemy import Engine, text

from tests.pipelines import RunBuilder
from tracer.demo import STAGES, answer_key, build_demo
from tracer.errors import TracerError
from tracer.manifest import load_manifest
from tracer.outcomes import STAGE_OUTCOMES
from tracer.queries.compare import compare, compare_keys
from tracer.queries.journey import history
from tracer.queries.reconciliation import reconciliation
from tracer.store import delete_run, ingest_manifest

FIXED = 7
"""Targeted clients the rerun's fix drops at `output`, with a reason in trace_main."""
REASON = "stale_window_fixed"


def _fixed_clients(folder: Path) -> list[int]:
    """The first clients of the output with nothing planted at `output` (so `passed` there)."""
    planted = set().union(*answer_key().keys["output"].values())
    output = pq.read_table(folder / "output.parquet", columns=["client_id"])
    ids = sorted(set(output.column("client_id").drop_null().to_pylist()) - planted)
    return ids[:FIXED]


def _rerun(folder: Path, original: str, fixed: list[int]) -> Path:
    """The demo again, its output without `fixed`, each of them logged as dropped there."""
    manifest = build_demo(folder, run_id=f"{original}-rerun")
    output = pq.read_table(folder / "output.parquet")
    keep = pc.invert(pc.is_in(output["client_id"], value_set=pa.array(fixed)))
    pq.write_table(output.filter(keep), folder / "output.parquet")
    trace = folder / "trace_main" / "stage=output"
    schema = pq.read_schema(next(trace.glob("*.parquet")))
    rows = [
        {"trace_id": 10_000_000 + i, "client_id": c, "reason": REASON, "offer_id": None}
        for i, c in enumerate(fixed)
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), trace / "part-00001-fix.parquet")
    spec = yaml.safe_load(manifest.read_text())
    spec["run"]["rerun_of"] = original
    manifest.write_text(yaml.safe_dump(spec, sort_keys=False))
    return manifest


@pytest.fixture(scope="module")
def rerun(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> dict[str, Any]:
    """The demo (run A) and its rerun (run B), ingested once for the module."""
    first = tmp_path_factory.mktemp("compare-a")
    a = ingest_manifest(engine, load_manifest(build_demo(first, run_id="compare-demo")))
    fixed = _fixed_clients(first)
    manifest = _rerun(tmp_path_factory.mktemp("compare-b"), a, fixed)
    b = ingest_manifest(engine, load_manifest(manifest))
    return {"a": a, "b": b, "fixed": fixed}


def test_the_rerun_changes_exactly_the_fixed_clients(rerun: dict[str, Any], engine: Engine) -> None:
    with engine.connect() as conn:
        summary = compare(conn, rerun["a"], rerun["b"])
        assert summary["run_a"] == rerun["a"] and summary["run_b"] == rerun["b"]
        assert summary["changed_keys"] == FIXED
        changed = [m for m in summary["matrix"] if m["a"] != m["b"]]
        assert changed == [{"a": "targeted", "b": "dropped", "keys": FIXED}]
        # Unchanged cells are listed too, and the matrix holds every key of both runs.
        totals = reconciliation(conn, rerun["a"])["totals"]
        assert sum(m["keys"] for m in summary["matrix"]) == totals["keys"]
        assert {m["a"] for m in summary["matrix"] if m["a"] == m["b"]} >= {"targeted", "dropped"}
        firsts = {f["stage"]: f["keys"] for f in summary["first_differences"]}
        assert tuple(firsts) == STAGES  # every stage, in pipeline order
        assert firsts["output"] == FIXED and sum(firsts.values()) == FIXED
        output = next(s for s in summary["stages"] if s["stage"] == "output")["outcomes"]
        assert output["dropped"]["delta"] == FIXED and output["passed"]["delta"] == -FIXED
        for stage in summary["stages"]:
            assert list(stage["outcomes"]) == [o.label for o in STAGE_OUTCOMES]

        page = compare_keys(conn, rerun["a"], rerun["b"], "targeted", "dropped", limit=5)
        rest = compare_keys(conn, rerun["a"], rerun["b"], "targeted", "dropped", after=page["next"])
        items = page["items"] + rest["items"]
        assert [i["key"]["client_id"] for i in items] == rerun["fixed"]
        assert page["total"] == FIXED and rest["next"] is None
        assert {json.dumps(i["first_difference"]) for i in items} == {
            json.dumps({"stage": "output", "a": "passed", "b": "dropped"})
        }
        # A cell of unchanged keys pages the same way, and its keys agree at every stage.
        same = compare_keys(conn, rerun["a"], rerun["b"], "orphaned", "orphaned")
        assert same["total"] == len(same["items"]) > 0
        assert all(i["first_difference"] is None for i in same["items"])


def test_a_rerun_says_what_it_changed(rerun: dict[str, Any], engine: Engine) -> None:
    with engine.connect() as conn:
        report = reconciliation(conn, rerun["b"])
        client = rerun["fixed"][0]
        found = history(conn, [client])["items"]
    assert report["rerun"] == {
        "of": rerun["a"],
        "changed_keys": FIXED,
        "command": f"tracer compare {rerun['a']} {rerun['b']}",
        "url": f"/api/v1/runs/{rerun['a']}/compare/{rerun['b']}",
        "note": None,
    }
    by_run = {h["run"]["run_id"]: (h["final_outcome"], h["left_at"]) for h in found}
    assert by_run[rerun["a"]] == ("targeted", None)
    assert by_run[rerun["b"]] == ("dropped", {"stage": "output", "outcome": "dropped"})


def test_keys_in_one_run_only_are_absent_in_the_other(build: RunBuilder) -> None:
    stages = [{"name": "a"}, {"name": "b"}]
    path_a = build.manifest(stages, {"a": _ids(1, 2, 3, 4), "b": _ids(1, 2, 3)}, run_id="abs-a")
    path_b = build.manifest(stages, {"a": _ids(2, 3, 4, 5), "b": _ids(2, 4, 5)}, run_id="abs-b")
    _same_pipeline(path_b, path_a)
    a = ingest_manifest(build.engine, load_manifest(path_a))
    b = ingest_manifest(build.engine, load_manifest(path_b))
    with build.engine.connect() as conn:
        summary = compare(conn, a, b)
        cells = {(m["a"], m["b"]): m["keys"] for m in summary["matrix"]}
        assert cells == {
            ("targeted", "targeted"): 1,  # 2
            ("targeted", "orphaned"): 1,  # 3
            ("orphaned", "targeted"): 1,  # 4
            ("targeted", "absent"): 1,  # 1
            ("absent", "targeted"): 1,  # 5
        }
        assert summary["changed_keys"] == 4
        gone = compare_keys(conn, a, b, "targeted", "absent")["items"]
        assert gone == [
            {
                "key": {"client_id": 1},
                "a": "targeted",
                "b": "absent",
                "first_difference": {"stage": "a", "a": "entered", "b": "absent"},
            }
        ]
        new = compare_keys(conn, a, b, "absent", "targeted")["items"]
        assert [i["key"] for i in new] == [{"client_id": 5}]
        empty = compare_keys(conn, a, b, "dropped", "dropped")
        assert empty["items"] == [] and empty["total"] == 0
        with pytest.raises(TracerError, match="absent from both"):
            compare_keys(conn, a, b, "absent", "absent")
        with pytest.raises(TracerError, match="final outcome or 'absent'"):
            compare_keys(conn, a, b, "vanished", "targeted")


def test_runs_of_different_pipelines_or_keys_are_refused(build: RunBuilder) -> None:
    one = build.run([{"name": "a"}], {"a": _ids(1)}, run_id="refuse-a")
    other = build.run([{"name": "a"}], {"a": _ids(1)}, run_id="refuse-b")
    with build.engine.connect() as conn, pytest.raises(TracerError, match="different pipelines"):
        compare(conn, one, other)


def test_comparisons_are_kept_until_a_run_is_classified_again(build: RunBuilder) -> None:
    stages = [{"name": "a"}, {"name": "b"}]
    path_a = build.manifest(stages, {"a": _ids(1, 2), "b": _ids(1, 2)}, run_id="kept-a")
    path_b = build.manifest(stages, {"a": _ids(1, 2), "b": _ids(1)}, run_id="kept-b")
    _same_pipeline(path_b, path_a)
    a = ingest_manifest(build.engine, load_manifest(path_a))
    b = ingest_manifest(build.engine, load_manifest(path_b))
    with build.engine.connect() as conn:
        assert compare(conn, a, b)["changed_keys"] == 1
    # The rerun is fixed and ingested again: the kept comparison no longer holds.
    pq.write_table(pa.Table.from_pylist(_ids(1, 2)), path_b.parent / "b.parquet")
    ingest_manifest(build.engine, load_manifest(path_b))
    with build.engine.connect() as conn:
        assert compare(conn, a, b)["changed_keys"] == 0
        assert compare_keys(conn, a, b, "targeted", "orphaned")["items"] == []
        assert compare(conn, b, a)["changed_keys"] == 0  # a pair is kept in each direction
        pk = conn.execute(text("SELECT pk FROM runs WHERE run_id = :b"), {"b": b}).scalar()
    kept = "SELECT count(*) FROM {} WHERE :pk IN (run_a_pk, run_b_pk)"
    pq.write_table(pa.Table.from_pylist(_ids(2)), path_b.parent / "b.parquet")
    ingest_manifest(build.engine, load_manifest(path_b))
    with build.engine.connect() as conn:
        assert compare(conn, a, b)["changed_keys"] == 1  # 1: targeted -> orphaned
        assert compare(conn, b, a)["changed_keys"] == 1
        assert conn.execute(text(kept.format("comparison_keys")), {"pk": pk}).scalar() == 2
    delete_run(build.engine, b)  # the kept comparisons, and their keys, go with the run
    with build.engine.connect() as conn:
        for table in ("comparisons", "comparison_keys"):
            assert conn.execute(text(kept.format(table)), {"pk": pk}).scalar() == 0


def test_compare_keys_csv_has_a_header_even_when_empty(build: RunBuilder) -> None:
    from tracer.queries.csv_lists import csv_chunks

    one = build.run([{"name": "a"}], {"a": _ids(1)}, run_id="csv-a")
    with build.engine.connect() as conn:
        page = compare_keys(conn, one, one, "dropped", "dropped")
    rows = list(csv.reader(io.StringIO("".join(csv_chunks("compare_keys", ["client_id"], [page])))))
    assert rows == [
        ["client_id", "a", "b", "first_difference_stage", "first_difference_a",
         "first_difference_b"]
    ]  # fmt: skip


def _ids(*ids: int) -> list[dict[str, int]]:
    return [{"client_id": i} for i in ids]


def _same_pipeline(path: Path, like: Path) -> None:
    """Name the pipeline of the manifest at `path` as that of `like` (RunBuilder names one
    pipeline per run)."""
    spec = json.loads(path.read_text())
    spec["pipeline"]["name"] = json.loads(like.read_text())["pipeline"]["name"]
    path.write_text(json.dumps(spec))
