"""Bad input: an error naming the file and column, and the database left exactly as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, text

from tests.pipelines import RunBuilder
from tracer.errors import ConflictError, IngestError, ManifestError
from tracer.manifest import load_manifest
from tracer.store import ingest_manifest

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


def test_unchanged_files_are_not_loaded_twice_and_a_changed_one_is_replaced(
    build: RunBuilder, engine: Engine
) -> None:
    path = build.manifest(STAGES, {"a": CLIENTS[:10], "b": CLIENTS[:10]}, run_id="reingest")
    ingest_manifest(engine, load_manifest(path))

    def ingested_at() -> dict[str, object]:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT d.name, d.ingested_at FROM datasets d JOIN runs r ON r.pk = d.run_pk "
                    "WHERE r.run_id = 'reingest'"
                )
            )
            return dict(rows.all())

    first = ingested_at()
    ingest_manifest(engine, load_manifest(path))
    assert ingested_at() == first  # same fingerprints: nothing reloaded
    pq.write_table(pa.Table.from_pylist(CLIENTS[:8]), path.parent / "b.parquet")
    ingest_manifest(engine, load_manifest(path))
    second = ingested_at()
    assert second["a"] == first["a"] and second["b"] != first["b"]
    assert build.report("reingest")["stages"][1]["outcomes"]["orphaned"] == 2
    with engine.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT c.data, d.key_count FROM dataset_chunks c "
                "JOIN datasets d ON d.id = c.dataset_id JOIN runs r ON r.pk = d.run_pk "
                "WHERE r.run_id = 'reingest' AND d.name = 'b'"
            )
        ).all()
    chunk_keys = sum(pq.read_table(pa.BufferReader(row.data)).num_rows for row in stored)
    assert (chunk_keys, stored[0].key_count) == (8, 8)  # replaced, not appended


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
