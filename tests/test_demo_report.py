"""The demo run, ingested into real Postgres, against the demo's complete answer key.

`tracer.demo.planted` lists, per stage, exactly which clients get each outcome
other than passed/entered (computed from what the builder wrote); tracer must
find every one of them at the right stage, and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from tracer.demo import build_demo, planted, planted_final, planted_rows, planted_schema_drift
from tracer.manifest import load_manifest
from tracer.outcomes import STAGE_OUTCOMES, UNREMARKABLE
from tracer.queries.anomalies import anomalies
from tracer.queries.reconciliation import reconciliation
from tracer.store import ingest_manifest


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> tuple[Path, str, dict]:
    folder = tmp_path_factory.mktemp("demo")
    manifest = load_manifest(build_demo(folder, run_id="demo-test"))
    run = ingest_manifest(engine, manifest)
    with engine.connect() as conn:
        return folder, run, reconciliation(conn, run)


def all_keys(engine: Engine, run: str, outcome: str, stage: str) -> set[int]:
    keys: set[int] = set()
    token = None
    with engine.connect() as conn:
        while True:
            page = anomalies(conn, run, outcome, stage, limit=5000, after=token)
            keys |= {item["key"]["client_id"] for item in page["items"]}
            if (token := page["next"]) is None:
                return keys


def test_every_planted_anomaly_is_found_at_its_stage(engine: Engine, demo: tuple) -> None:
    folder, run, report = demo
    answer = planted(folder)
    for stage in report["stages"]:
        name = stage["stage"]
        expected = answer.get(name, {})
        for outcome in [o for o in STAGE_OUTCOMES if o not in UNREMARKABLE]:
            want = expected.get(outcome.label, set())
            assert stage["outcomes"][outcome.label] == len(want), (name, outcome.label)
            if want:
                assert all_keys(engine, run, outcome.label, name) == want, (name, outcome.label)
        grain = expected.get("grain_violation", set())
        assert stage["flags"]["grain_violation"] == len(grain), name
        if grain:
            assert all_keys(engine, run, "grain_violation", name) == grain


def test_row_level_flags_and_schema_drift(demo: tuple) -> None:
    folder, _, report = demo
    rows = planted_rows(folder)
    drift = planted_schema_drift(folder)
    for stage in report["stages"]:
        name, flags = stage["stage"], stage["flags"]
        assert flags["null_key"]["total"] == rows[name].get("null_key", 0), name
        assert flags["duplicate_rows"] == rows[name].get("duplicate_rows", 0), name
        extra = stage["rows"]["multiplied"]["rows_out"] - stage["rows"]["multiplied"]["rows_in"]
        assert extra == rows[name].get("multiplied_extra_rows", 0), name
        assert [c["column"] for c in flags["dropped_columns"]] == drift.get(name, []), name


def test_final_outcomes_and_totals(demo: tuple) -> None:
    folder, _, report = demo
    final = planted_final(folder)
    totals = report["totals"]
    for outcome in ("dropped", "dropped_unreported", "orphaned", "never_entered"):
        assert totals[outcome] == len(final.get(outcome, set())), outcome
    assert totals["entered"] == report["stages"][0]["outcomes"]["entered"]
    assert sum(c["contribution"] for c in report["gap_cells"]) == totals["gap"]
    assert totals["reconciles"] is False
