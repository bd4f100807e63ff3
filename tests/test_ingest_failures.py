"""Bad input: an error naming the file and column, and the database left exactly as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, text

from tests.pipelines import RunBuilder
from tracer.errors import ConflictError, IngestError, ManifestError
from tracer.manifest import load_manifest
from tracer.store import classify_step, ingest_manifest, ingest_step, submit_run

CLIENTS = [{"client_id": i, "segment": f"s{i % 7}", "score": i * 1.5} for i in range(1, 20_001)]
STAGES = [{"name": "a"}, {"name": "b"}]


def snapshot(engine: Engine) -> dict[str, str]:
    """Every table and partition of the schema with a digest of its whole content."""
    with engine.connect() as conn:
        names = conn.execute(
            text(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY relname"
            )
        ).scalars()
        out = {}
        for name in names:
            digest = conn.execute(
                text(
                    "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                    f'FROM "{name}" t'
                )
            ).scalar()
            out[name] = digest
        return out


def corrupt_middle(path: Path) -> None:
    """Overwrite bytes inside the data pages, keeping the footer readable."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 2048] = hashlib.sha512(b"x").digest() * 32
    path.write_bytes(bytes(data))


def test_corrupt_data_pages_fail_the_whole_ingest_and_change_nothing(
    build: RunBuilder, engine: Engine
) -> None:
    build.run(STAGES, {"a": CLIENTS[:10], "b": CLIENTS[:10]})  # something already stored
    manifest_path = build.manifest(STAGES, {"a": CLIENTS, "b": CLIENTS[:15_000]})
    corrupt_middle(manifest_path.parent / "b.parquet")
    manifest = load_manifest(manifest_path)  # footer intact: validation passes
    before = snapshot(engine)
    with pytest.raises(IngestError) as failure:
        ingest_manifest(engine, manifest)
    assert "b.parquet" in str(failure.value) and "'b'" in str(failure.value)
    assert snapshot(engine) == before


def test_a_part_file_broken_after_validation_fails_the_ingest_naming_it(
    build: RunBuilder, engine: Engine
) -> None:
    """Validation reads every footer, but a file can change before ingestion reads it: the
    ingest then fails as the dataset's error, naming the part file, and stores nothing
    (docs/semantics.md#publishing: a failed post leaves the published answers as they were)."""
    build.run(STAGES, {"a": CLIENTS[:10], "b": CLIENTS[:10]})  # something already stored
    path = build.manifest(STAGES, {"a": CLIENTS[:5], "b": CLIENTS[:5]}, spark={"b": []})
    manifest = load_manifest(path)
    part = sorted((path.parent / "b").glob("part-*.parquet"))[1]
    part.write_bytes(b"this is not parquet")
    before = snapshot(engine)
    with pytest.raises(IngestError) as failure:
        ingest_manifest(engine, manifest)
    assert "'b'" in str(failure.value) and part.name in str(failure.value)
    assert snapshot(engine) == before


def test_unreadable_file_is_refused_at_validation_naming_the_field_and_file(
    build: RunBuilder,
) -> None:
    path = build.manifest(STAGES, {"a": CLIENTS[:5], "b": CLIENTS[:5]})
    (path.parent / "b.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(ManifestError) as failure:
        load_manifest(path)
    assert any("run.outputs.b" in e and "b.parquet" in e for e in failure.value.errors)


def test_missing_key_column_names_the_file_and_column(build: RunBuilder, engine: Engine) -> None:
    path = build.manifest(STAGES, {"a": CLIENTS[:5], "b": [{"id": 1}]})
    before = snapshot(engine)
    with pytest.raises(ManifestError) as failure:
        load_manifest(path)
    (error,) = failure.value.errors
    assert "b.parquet" in error and "key column 'client_id' is missing" in error
    assert snapshot(engine) == before


def test_stage_value_naming_no_stage_names_the_column(build: RunBuilder, engine: Engine) -> None:
    trace = [{"client_id": 3, "stage": "nowhere", "reason": "r"}]
    path = build.manifest(
        STAGES,
        {"a": CLIENTS[:5], "b": CLIENTS[:2]},
        trace={
            "t": ({"reported": True, "stage_column": "stage", "reason_column": "reason"}, trace)
        },
    )
    before = snapshot(engine)
    with pytest.raises(IngestError) as failure:
        ingest_manifest(engine, load_manifest(path))
    assert failure.value.column == "stage" and "'nowhere'" in str(failure.value)
    assert "t.parquet" in str(failure.value)
    assert snapshot(engine) == before


def test_string_key_that_is_not_an_integer_under_an_int64_key(
    build: RunBuilder, engine: Engine
) -> None:
    path = build.manifest(
        STAGES,
        {"a": CLIENTS[:5], "b": [{"client_id": "12"}, {"client_id": "x7"}]},
        key_types={"client_id": "int64"},
        schemas={"b": pa.schema([("client_id", pa.string())])},
    )
    with pytest.raises(IngestError) as failure:
        ingest_manifest(engine, load_manifest(path))
    assert failure.value.column == "client_id" and "'x7'" in str(failure.value)


def _of_datasets(engine: Engine, run_id: str, select: str, join: str = "") -> list[Any]:
    """(dataset name, `select`) rows of the run's datasets, `join` joined to them as `d`."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                f"SELECT d.name, {select} FROM datasets d {join} "
                "JOIN runs r ON r.pk = d.run_pk WHERE r.run_id = :run"
            ),
            {"run": run_id},
        ).all()


def _ingested_at(engine: Engine, run_id: str) -> dict[str, object]:
    return dict(_of_datasets(engine, run_id, "d.ingested_at"))


def _chunks(engine: Engine, run_id: str) -> dict[str, int]:
    """Keys in the stored chunks of each dataset of the run."""
    stored = _of_datasets(engine, run_id, "c.data", "JOIN dataset_chunks c ON c.dataset_id = d.id")
    out: dict[str, int] = {}
    for name, data in stored:
        out[name] = out.get(name, 0) + pq.read_table(pa.BufferReader(data)).num_rows
    return out


def test_a_run_posted_again_unchanged_is_not_read_again_and_a_change_rereads_it(
    build: RunBuilder, engine: Engine
) -> None:
    """One pass keeps no chunks: the same files are not read again, and a changed file makes
    the run read whole again (its other datasets too), with the answers of the new files
    (docs/semantics.md#publishing, and #outcomes for `orphaned`)."""
    path = build.manifest(STAGES, {"a": CLIENTS[:10], "b": CLIENTS[:10]}, run_id="reingest")
    ingest_manifest(engine, load_manifest(path))
    first = _ingested_at(engine, "reingest")
    assert _chunks(engine, "reingest") == {}  # the run's rows per key stayed in the pass
    ingest_manifest(engine, load_manifest(path))
    assert _ingested_at(engine, "reingest") == first  # same fingerprints: nothing reloaded
    pq.write_table(pa.Table.from_pylist(CLIENTS[:8]), path.parent / "b.parquet")
    ingest_manifest(engine, load_manifest(path))
    second = _ingested_at(engine, "reingest")
    assert second["a"] != first["a"] and second["b"] != first["b"]
    assert build.report("reingest")["stages"][1]["outcomes"]["orphaned"] == 2


def test_jobs_reuse_only_the_chunks_they_stored(build: RunBuilder, engine: Engine) -> None:
    """The per-dataset path skips an unchanged dataset by reusing its chunks; after a one-pass
    ingestion there are none, so a job reads the dataset rather than trust its fingerprint
    (docs/semantics.md#publishing: the new classification is of the files as they are)."""
    path = build.manifest(STAGES, {"a": CLIENTS[:10], "b": CLIENTS[:10]}, run_id="by-jobs")
    ingest_manifest(engine, load_manifest(path))
    pq.write_table(pa.Table.from_pylist(CLIENTS[:8]), path.parent / "b.parquet")
    submitted = submit_run(engine, load_manifest(path))
    results = [ingest_step(engine, dataset_id) for dataset_id in submitted.dataset_ids]
    assert [r.skipped for r in results] == [False, False]  # `a` unchanged, but no chunks
    classify_step(engine, submitted.run_pk)
    assert build.report("by-jobs")["stages"][1]["outcomes"]["orphaned"] == 2
    assert _chunks(engine, "by-jobs") == {"a": 10, "b": 8}
    pq.write_table(pa.Table.from_pylist(CLIENTS[:9]), path.parent / "b.parquet")
    submitted = submit_run(engine, load_manifest(path))
    results = [ingest_step(engine, dataset_id) for dataset_id in submitted.dataset_ids]
    assert [r.skipped for r in results] == [True, False]  # `a`'s chunks are stored now
    classify_step(engine, submitted.run_pk)
    assert build.report("by-jobs")["stages"][1]["outcomes"]["orphaned"] == 1
    assert _chunks(engine, "by-jobs") == {"a": 10, "b": 9}  # replaced, not appended


def test_a_post_after_jobs_loaded_new_content_classifies_it(
    build: RunBuilder, engine: Engine
) -> None:
    """Jobs that loaded a changed file but never classified it (the classify job lost) leave
    the published answers older than the stored data: posting the same files again must
    classify, not declare the old answers current (docs/semantics.md#publishing; #outcomes
    for `orphaned`)."""
    path = build.manifest(STAGES, {"a": CLIENTS[:10], "b": CLIENTS[:10]}, run_id="half-jobs")
    ingest_manifest(engine, load_manifest(path))
    pq.write_table(pa.Table.from_pylist(CLIENTS[:8]), path.parent / "b.parquet")
    submitted = submit_run(engine, load_manifest(path))
    for dataset_id in submitted.dataset_ids:
        ingest_step(engine, dataset_id)  # the classify job never runs
    assert build.report("half-jobs")["stages"][1]["outcomes"]["orphaned"] == 0  # still the old
    ingest_manifest(engine, load_manifest(path))
    assert build.report("half-jobs")["stages"][1]["outcomes"]["orphaned"] == 2


def test_a_run_id_reused_with_another_pipeline_definition_is_refused(
    build: RunBuilder, engine: Engine
) -> None:
    build.run(STAGES, {"a": CLIENTS[:3], "b": CLIENTS[:3]}, run_id="reused")
    path = build.manifest(
        [{"name": "a"}, {"name": "b", "grain": ["client_id", "segment"]}],
        {"a": CLIENTS[:3], "b": CLIENTS[:3]},
        run_id="reused",
    )
    with pytest.raises(ConflictError, match="another definition"):
        ingest_manifest(engine, load_manifest(path))


def test_a_nul_in_a_reason_fails_naming_the_source_and_column(
    build: RunBuilder, engine: Engine
) -> None:
    """Postgres text cannot hold NUL: a reason holding one is refused, not half stored."""
    build.run(STAGES, {"a": CLIENTS[:10], "b": CLIENTS[:10]})
    spec = {"reported": True, "stage": "b", "reason_column": "reason"}
    rows = [{"client_id": 3, "reason": "credit\x00default"}]
    path = build.manifest(STAGES, {"a": CLIENTS[:5], "b": CLIENTS[:2]}, trace={"t": (spec, rows)})
    before = snapshot(engine)
    with pytest.raises(IngestError) as failure:
        ingest_manifest(engine, load_manifest(path))
    message = failure.value.message
    assert "dataset 't'" in message and "column 'reason'" in message, message
    assert "NUL" in message and "'credit\\x00default'" in message, message
    assert snapshot(engine) == before
