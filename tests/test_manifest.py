"""Manifest validation: every problem is reported, each naming the field, file or column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.pipelines import write_parquet
from tracer.errors import ManifestError
from tracer.manifest import load_manifest, parse_manifest

ROWS = [{"client_id": 1, "offer": "x", "stage": "b", "reason": "r"}]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ("a", "b", "c", "t"):
        write_parquet(tmp_path / f"{name}.parquet", ROWS)
    return tmp_path


def manifest(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "pipeline": {
            "name": "p",
            "key": ["client_id"],
            "stages": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
            "traceability": [{"name": "t", "reported": True, "stage_column": "stage"}],
        },
        "run": {
            "id": "r1",
            "outputs": {"a": "a.parquet", "b": "b.parquet", "c": "c.parquet"},
            "traceability": {"t": "t.parquet"},
        },
    }
    for path, value in changes.items():
        node = base
        *parents, leaf = path.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return base


def errors_of(data: dict[str, Any], folder: Path) -> list[str]:
    with pytest.raises(ManifestError) as failure:
        parse_manifest(data, base_dir=folder, source="m.yaml")
    return failure.value.errors


def test_a_valid_manifest_in_yaml(folder: Path) -> None:
    (folder / "m.yaml").write_text(yaml.safe_dump(manifest()))
    m = load_manifest(folder / "m.yaml")
    assert [s.name for s in m.pipeline.stages] == ["a", "b", "c"]
    assert m.pipeline.stage("b").parents == ("a",)  # parents default to the previous stage
    assert m.pipeline.key_types == ("int64",)  # inferred from the data
    assert m.datasets[0].uri == str(folder / "a.parquet")  # relative to the manifest


def test_unknown_and_duplicate_stages(folder: Path) -> None:
    stages = [{"name": "a"}, {"name": "b", "parents": ["zz"]}, {"name": "b"}]
    errors = errors_of(manifest(pipeline__stages=stages), folder)
    assert any("duplicate stage 'b'" in e for e in errors)
    assert any("pipeline.stages[b].parents: 'zz' names no stage" in e for e in errors)


def test_a_cycle_is_named_with_its_path(folder: Path) -> None:
    stages = [{"name": "a", "parents": []}, {"name": "b", "parents": ["a", "c"]}, {"name": "c"}]
    (error,) = errors_of(manifest(pipeline__stages=stages), folder)
    assert "cycle" in error and "b -> c -> b" in error


def test_missing_path_unknown_output_and_missing_file(folder: Path) -> None:
    outputs = {"a": "a.parquet", "c": "nope/", "zz": "a.parquet"}
    errors = errors_of(manifest(run__outputs=outputs), folder)
    assert "run.outputs.b: missing path" in errors
    assert any(e.startswith("run.outputs.c: no such file or directory") for e in errors)
    assert any(e.startswith("run.outputs.zz: names no stage") for e in errors)


def test_traceability_source_must_name_a_stage(folder: Path) -> None:
    sources = [
        {"name": "t", "reported": True},
        {"name": "u", "reported": False, "stage": "nowhere"},
    ]
    errors = errors_of(
        manifest(
            pipeline__traceability=sources, run__traceability={"t": "t.parquet", "u": "t.parquet"}
        ),
        folder,
    )
    assert any("pipeline.traceability[t]: name the stage" in e for e in errors)
    assert any("pipeline.traceability[u].stage: 'nowhere' names no stage" in e for e in errors)


def test_unknown_fields_and_wrong_types_name_the_field(folder: Path) -> None:
    data = manifest(pipeline__stages=[{"name": "a", "fanout": "sometimes"}], run__colour="red")
    errors = errors_of(data, folder)
    assert any(e.startswith("pipeline.stages.0.fanout") for e in errors)
    assert any(e.startswith("run.colour") for e in errors)


def test_expected_fanout_needs_a_grain(folder: Path) -> None:
    stages = [{"name": "a"}, {"name": "b", "fanout": "expected"}, {"name": "c"}]
    (error,) = errors_of(manifest(pipeline__stages=stages), folder)
    assert error.startswith("pipeline.stages[b].fanout")


def test_key_types_must_agree_unless_declared(folder: Path) -> None:
    write_parquet(folder / "c.parquet", [{"client_id": "1", "stage": "b"}])
    (error,) = errors_of(manifest(), folder)
    assert "pipeline.key_types.client_id" in error and "c.parquet" in error
    data = manifest(pipeline__key_types={"client_id": "string"})
    assert parse_manifest(data, base_dir=folder).pipeline.key_types == ("string",)


def test_stage_and_reason_columns_must_exist(folder: Path) -> None:
    sources = [{"name": "t", "reported": True, "stage_column": "stg", "reason_column": "why"}]
    errors = errors_of(manifest(pipeline__traceability=sources), folder)
    assert any("stage_column 'stg' is not a column" in e for e in errors)
    assert any("reason_column 'why' is not a column" in e for e in errors)


def test_not_yaml(folder: Path) -> None:
    (folder / "m.yaml").write_text("pipeline: [unclosed")
    with pytest.raises(ManifestError, match="not valid YAML or JSON"):
        load_manifest(folder / "m.yaml")
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(folder / "missing.yaml")


def test_spark_directory_and_glob_paths(folder: Path) -> None:
    write_parquet(folder / "spark_a", ROWS * 4, spark=True)
    data = manifest(run__outputs={"a": "spark_a/", "b": "b.parquet", "c": "[c].parquet"})
    m = parse_manifest(data, base_dir=folder)
    assert m.datasets[0].open().count_rows() == 4  # _SUCCESS is skipped
    assert m.datasets[2].open().count_rows() == 1
