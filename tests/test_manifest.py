"""Manifest validation: every problem is reported, each naming the field, file or column."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.pipelines import write_parquet
from tracer.errors import ManifestError
from tracer.limits import (
    MAX_KEY_COLUMNS,
    MAX_LABEL,
    MAX_MANIFEST_BYTES,
    MAX_PATH,
    MAX_STAGES,
    is_name,
)
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
    assert any(e.startswith("pipeline.stages[0].fanout: Input should be") for e in errors)
    assert not any("pipeline.str" in e or "function-after" in e for e in errors)
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
    with pytest.raises(ManifestError, match=r"m.yaml: not valid YAML \(line 1, column "):
        load_manifest(folder / "m.yaml")
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(folder / "missing.yaml")


def test_spark_directory_and_glob_paths(folder: Path) -> None:
    write_parquet(folder / "spark_a", ROWS * 4, spark=True)
    data = manifest(run__outputs={"a": "spark_a/", "b": "b.parquet", "c": "[c].parquet"})
    m = parse_manifest(data, base_dir=folder)
    assert m.datasets[0].open().count_rows() == 4  # _SUCCESS is skipped
    assert m.datasets[2].open().count_rows() == 1


# Names and limits (issue #10) ------------------------------------------------------------

IDS_IN_USE = [
    "2026-11-25-solution-a",  # README
    "2026-11-26-solution-a-rerun",
    "demo-2026-11-25",  # tracer demo
    "demo-2026-11-25-rerun",
    "bench-1000000-seed-20261125",  # bench/
    "bench-1000000-seed-20261125-load3",
    "p-run-test_a_valid_manifest_in_0-1",  # tests/pipelines.py
    "sec-0f3a9c1b",
    "web-demo-0f3a9c",
    "ingest:ci-airflow@2026-11-25+1",
    "r" * 128,
]


@pytest.mark.parametrize(  # OpenLineage runs: UUIDs
    "name", [*IDS_IN_USE, str(uuid.UUID(int=0xFAC92ED8F50E4084873DAB6BAAFFC74A))]
)
def test_the_name_grammar_admits_every_id_in_use(name: str) -> None:
    assert is_name(name)


@pytest.mark.parametrize(
    "name", ["a/../x", "..", ".", "-x", "a b", "a\tb", "a\r\nb", "it's", '"x"', "", "r" * 129,
             "Zürich", "a\x00", "a%2Fb", "a\\b"],
)  # fmt: skip
def test_the_name_grammar_refuses_what_cannot_travel(name: str, folder: Path) -> None:
    assert not is_name(name)
    errors = errors_of(manifest(run__id=name, pipeline__name=name), folder)
    if "\x00" in name:  # refused before validation, wherever it is: Postgres cannot store it
        assert any("holds a NUL character" in e for e in errors), errors
        return
    assert any(e.startswith("run.id: ") and "is not a valid name" in e for e in errors)
    assert any(e.startswith("pipeline.name: ") for e in errors)


def test_sizes_are_bounded_and_each_bound_names_its_field(folder: Path) -> None:
    stages = [{"name": f"s{i}"} for i in range(MAX_STAGES + 1)]
    data = manifest(
        pipeline__stages=stages,
        pipeline__key=[f"k{i}" for i in range(MAX_KEY_COLUMNS + 1)],
        run__label="x" * (MAX_LABEL + 1),
        run__outputs={"a": "a" * (MAX_PATH + 1)},
    )
    errors = errors_of(data, folder)
    assert f"pipeline.stages: List should have at most {MAX_STAGES} items after validation, " \
        f"not {MAX_STAGES + 1}" in errors  # fmt: skip
    assert any(e.startswith("pipeline.key: List should have at most 16 items") for e in errors)
    assert f"run.label: String should have at most {MAX_LABEL} characters" in errors
    assert f"run.outputs.a: String should have at most {MAX_PATH} characters" in errors


def test_a_manifest_file_too_big_or_not_utf8(folder: Path) -> None:
    big = folder / "big.yaml"
    big.write_bytes(b"# " + b"x" * MAX_MANIFEST_BYTES)
    with pytest.raises(ManifestError, match=r"big.yaml: a manifest may have at most 4,194,304"):
        load_manifest(big)
    latin = folder / "latin.yaml"
    latin.write_bytes(b"pipeline:\n  name: Z\xfcrich\n")
    with pytest.raises(ManifestError) as failure:
        load_manifest(latin)
    assert failure.value.message == (
        f"{latin}: not UTF-8 text: byte 0xfc at line 2, column 10 (byte 19); "
        "save the manifest as UTF-8"
    )


def test_aliases_are_fine_until_they_explode(folder: Path) -> None:
    text = yaml.safe_dump(manifest()).replace("id: r1", "id: &id r1\n  label: *id")
    assert parse_manifest(text, base_dir=folder).label == "r1"  # an alias is fine
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcde", "bcdef", strict=True)
    )
    with pytest.raises(ManifestError, match="more than 100,000 values once YAML aliases"):
        parse_manifest(bomb + "pipeline: *f\n", base_dir=folder)


def test_a_grain_column_dropped_by_the_stage_is_drift_but_one_nowhere_is_a_typo(
    folder: Path,
) -> None:
    stages = [{"name": "a"}, {"name": "b", "grain": ["client_id", "offer"]}, {"name": "c"}]
    write_parquet(folder / "b.parquet", [{"client_id": 1}])  # offer dropped: drift, accepted
    assert parse_manifest(manifest(pipeline__stages=stages), base_dir=folder)
    stages[1]["grain"] = ["client_id", "ofer"]
    (error,) = errors_of(manifest(pipeline__stages=stages), folder)
    assert error == (
        f"pipeline.stages[b].grain: column 'ofer' is neither in dataset 'b' "
        f"({folder / 'b.parquet'}) nor in any earlier stage's output; columns are client_id"
    )


def test_a_registered_pipeline_outside_todays_limits_is_an_error_not_a_traceback(
    folder: Path,
) -> None:
    legacy = {**manifest()["pipeline"], "name": "old name"}
    with pytest.raises(ManifestError) as failure:
        parse_manifest(manifest(pipeline="old-name"), base_dir=folder, lookup=lambda _: legacy)
    assert failure.value.errors[0].startswith("pipeline 'old-name': name: 'old name' is not")
