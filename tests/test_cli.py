"""The CLI end to end against the test database: JSON shapes scripts rely on, tables, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.pipelines import RunBuilder
from tracer.cli import main
from tracer.outcomes import STAGE_OUTCOMES

TOTALS = {
    "entered", "targeted", "dropped", "dropped_unreported", "orphaned", "never_entered",
    "residual", "traced", "traced_reported", "gap", "reporting_gap", "reconciles",
}  # fmt: skip


@pytest.fixture
def cli(database_url: str, engine: Any) -> Any:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(
            main, list(args), env={"DATABASE_URL": database_url}, catch_exceptions=False
        )

    return invoke


@pytest.fixture
def manifest(build: RunBuilder) -> Path:
    trace = [{"client_id": 3, "reason": "opted_out"}]
    return build.manifest(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={
            "a": [{"client_id": i} for i in (1, 2, 3, 4)],
            "b": [{"client_id": i} for i in (1, 2)],
        },
        trace={"t": ({"reported": False, "stage": "b", "reason_column": "reason"}, trace)},
        run_id="cli-run",
    )


def test_ingest_then_report_json_shape(cli: Any, manifest: Path) -> None:
    result = cli("ingest", str(manifest), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(cli("report", "cli-run", "--json").output)
    assert set(data) == {"run", "totals", "gap_cells", "reporting_gap_cells", "stages"}
    assert set(data["totals"]) >= TOTALS
    assert [s["stage"] for s in data["stages"]] == ["a", "b"]
    for stage in data["stages"]:
        assert list(stage["outcomes"]) == [o.label for o in STAGE_OUTCOMES]
        assert all(set(v) == {"in", "out", "drop"} for v in stage["rows"].values())
        assert set(stage["flags"]) >= {
            "duplicate_rows",
            "grain_violation",
            "null_key",
            "dropped_columns",
        }
    b = data["stages"][1]
    assert (b["outcomes"]["dropped_unreported"], b["outcomes"]["orphaned"]) == (1, 1)
    for cell in data["gap_cells"] + data["reporting_gap_cells"]:
        assert {"entered", "targeted", "traced", "keys", "contribution"} <= set(cell)
    assert data["totals"]["gap"] == 1 and data["totals"]["reporting_gap"] == 2


def test_where_json_shape(cli: Any, manifest: Path) -> None:
    cli("ingest", str(manifest), "--json")
    data = json.loads(cli("where", "cli-run", "3", "--json").output)
    assert {"run", "key", "final_outcome", "stages"} <= set(data)
    assert data["key"] == {"client_id": 3} and data["final_outcome"] == "dropped_unreported"
    b = data["stages"][1]
    assert {"stage", "outcome", "rows_in", "rows_out", "reasons"} <= set(b)
    assert b["reasons"] == [{"source": "t", "reason": "opted_out", "rows": 1, "reported": False}]


def test_human_tables(cli: Any, manifest: Path) -> None:
    ingest = cli("ingest", str(manifest))
    assert ingest.exit_code == 0 and "orphaned" in ingest.output
    where = cli("where", "cli-run", "4")
    assert "orphaned" in where.output and "client 4" in where.output
    listed = cli("anomalies", "cli-run", "--outcome", "orphaned")
    assert listed.exit_code == 0 and "│ b " in listed.output
    lost = cli("anomalies", "cli-run", "--cell", "lost", "--reporting", "--json")
    assert json.loads(lost.output)["items"] == [{"client_id": 3}, {"client_id": 4}]


def test_errors_exit_2_with_a_message(cli: Any, manifest: Path, tmp_path: Path) -> None:
    missing = cli("report", "no-such-run")
    assert missing.exit_code == 2 and "run 'no-such-run' not found" in missing.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: {name: p, key: [id], stages: []}\nrun: {id: x, outputs: {}}\n")
    invalid = cli("ingest", str(bad))
    assert invalid.exit_code == 2 and "pipeline.stages" in invalid.output
    cli("ingest", str(manifest), "--json")
    wrong_key = cli("where", "cli-run", "abc")
    assert wrong_key.exit_code == 2 and "integer" in wrong_key.output


def test_history_and_delete(cli: Any, manifest: Path) -> None:
    cli("ingest", str(manifest), "--json")
    history = json.loads(cli("history", "4", "--json").output)
    finals = {r["run_id"]: r["final_outcome"] for r in history["runs"]}
    assert finals["cli-run"] == "orphaned"
    assert cli("delete", "cli-run").exit_code == 0
    assert cli("report", "cli-run").exit_code == 2
