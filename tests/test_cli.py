"""The CLI end to end against the test database: JSON shapes scripts rely on, tables, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.pipelines import RunBuilder
from tests.test_render import assert_fits, assert_line, assert_report, stage_cells
from tracer.cli import main
from tracer.outcomes import STAGE_OUTCOMES

TOTALS = {
    "entered", "targeted", "dropped", "dropped_unreported", "orphaned", "never_entered",
    "residual", "traced", "traced_reported", "gap", "reporting_gap", "reconciles",
}  # fmt: skip
ROW_COUNTS = {"rows_in", "rows_out", "rows_dropped"}


@pytest.fixture
def cli(database_url: str, engine: Any) -> Any:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        env = {"DATABASE_URL": database_url, "COLUMNS": "80"}
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

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
    data = json.loads(cli("reconciliation", "cli-run", "--json").stdout)
    assert json.loads(result.stdout) == data  # ingest answers with the run's report
    assert set(data) == {"run", "totals", "gap_cells", "reporting_gap_cells", "stages", "rerun"}
    assert data["rerun"] is None  # not a rerun
    assert set(data["totals"]) >= TOTALS
    assert [s["stage"] for s in data["stages"]] == ["a", "b"]
    for stage in data["stages"]:
        assert list(stage["outcomes"]) == [o.label for o in STAGE_OUTCOMES]
        assert all(set(v) == ROW_COUNTS for v in stage["rows"].values())
        assert set(stage["flags"]) >= {
            "duplicate_rows",
            "grain_violation",
            "null_key",
            "dropped_columns",
        }
    b = data["stages"][1]
    assert (b["outcomes"]["dropped_unreported"], b["outcomes"]["orphaned"]) == (1, 1)
    for cell in data["gap_cells"] + data["reporting_gap_cells"]:
        assert {"entered", "targeted", "traced", "keys", "contribution", "causes"} <= set(cell)
    assert data["totals"]["gap"] == 1 and data["totals"]["reporting_gap"] == 2
    assert data["totals"]["failed_conditions"] == [
        "1 dropped_unreported keys", "1 orphaned keys", "gap 1", "reporting gap 2"
    ] or data["totals"]["failed_conditions"] == [
        "1 orphaned keys", "1 dropped_unreported keys", "gap 1", "reporting gap 2"
    ]  # fmt: skip


def test_where_json_shape(cli: Any, manifest: Path) -> None:
    cli("ingest", str(manifest), "--json")
    data = json.loads(cli("journey", "cli-run", "3", "--json").stdout)
    assert {"run", "key", "final_outcome", "stages"} <= set(data)
    assert data["key"] == {"client_id": 3} and data["final_outcome"] == "dropped_unreported"
    assert data["summary"] == "left at b: opted_out, logged in t, not visible in reporting"
    b = data["stages"][1]
    assert {"stage", "outcome", "rows_in", "rows_out", "reasons"} <= set(b)
    assert b["reasons"] == [{"source": "t", "reason": "opted_out", "rows": 1, "reported": False}]


def test_human_tables(cli: Any, manifest: Path) -> None:
    # Each table says what the JSON of the same command says, figure by figure.
    ingest = cli("ingest", str(manifest))
    assert ingest.exit_code == 0
    report = json.loads(cli("reconciliation", "cli-run", "--json").stdout)
    assert_fits(ingest.stdout, 80)
    assert_report(ingest.stdout, report)
    cells = stage_cells(ingest.stdout)
    assert (cells["keys in", "b"], cells["keys out", "b"]) == ("4", "2")
    assert (cells["orphaned", "b"], cells["dropped_unreported", "b"]) == ("1", "1")
    assert cli("reconciliation", "cli-run").stdout == ingest.stdout

    where = cli("journey", "cli-run", "4")
    assert (
        json.loads(cli("journey", "cli-run", "4", "--json").stdout)["final_outcome"] == "orphaned"
    )
    assert where.stdout.splitlines()[0] == "client 4 in run cli-run: orphaned"
    assert_line(where.stdout, "a", "entered", "0", "1")
    assert_line(where.stdout, "b", "orphaned", "1", "0")

    listed = cli("anomalies", "cli-run", "--outcome", "orphaned")
    items = json.loads(cli("anomalies", "cli-run", "--outcome", "orphaned", "--json").stdout)
    assert listed.exit_code == 0 and [i["key"] for i in items["items"]] == [{"client_id": 4}]
    assert_line(listed.stdout, "b", "4", "1", "0", "0", "0")

    lost = cli("gap-keys", "cli-run", "lost", "--reporting", "--json")
    items = json.loads(lost.stdout)["items"]
    assert [(i["key"], i["stage"], i["outcome"]) for i in items] == [
        ({"client_id": 3}, "b", "dropped_unreported"),
        ({"client_id": 4}, "b", "orphaned"),
    ]
    assert cli("gap-keys", "cli-run", "lost", "--reporting", "--keys").stdout.splitlines() == [
        "3",
        "4",
    ]
    table = cli("gap-keys", "cli-run", "lost", "--reporting").stdout
    assert_line(table, "3", "dropped_unreported at b", "dropped_unreported", "opted_out (t,")
    assert_line(table, "4", "orphaned at b", "orphaned")
    only = json.loads(cli("gap-keys", "cli-run", "lost", "--reporting", "--outcome", "orphaned",
                          "--json").stdout)  # fmt: skip
    assert [i["key"] for i in only["items"]] == [{"client_id": 4}] and only["total"] == 1
    csv_text = cli("gap-keys", "cli-run", "lost", "--reporting", "--csv").stdout
    assert csv_text.splitlines()[0] == "client_id,stage,outcome,final_outcome,reasons"


def test_errors_exit_2_with_a_message(cli: Any, manifest: Path, tmp_path: Path) -> None:
    missing = cli("reconciliation", "no-such-run")
    assert missing.exit_code == 2 and "run 'no-such-run' not found" in missing.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: {name: p, key: [id], stages: []}\nrun: {id: x, outputs: {}}\n")
    invalid = cli("ingest", str(bad))
    assert invalid.exit_code == 2 and "pipeline.stages" in invalid.output
    cli("ingest", str(manifest), "--json")
    wrong_key = cli("journey", "cli-run", "abc")
    assert wrong_key.exit_code == 2 and "integer" in wrong_key.output


def test_history_and_delete(cli: Any, manifest: Path) -> None:
    cli("ingest", str(manifest), "--json")
    history = json.loads(cli("history", "4", "--json").stdout)
    finals = {i["run"]["run_id"]: i["final_outcome"] for i in history["items"]}
    assert finals["cli-run"] == "orphaned"
    pipeline = next(
        i["run"]["pipeline"] for i in history["items"] if i["run"]["run_id"] == "cli-run"
    )
    assert_line(cli("history", "4").stdout, "cli-run", pipeline, "orphaned")
    assert cli("delete", "cli-run").exit_code == 0
    assert cli("reconciliation", "cli-run").exit_code == 2
