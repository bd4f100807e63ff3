"""Build small pipeline runs as real Parquet files plus a manifest, for tests.

Tests describe each stage output as a list of rows (dicts) and each
traceability source likewise; the builder writes them the way Spark would when
asked (`spark=True`: part files, `_SUCCESS`, hive partition folders).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine

from tracer.manifest import load_manifest
from tracer.queries.journey import journey
from tracer.queries.reconciliation import reconciliation
from tracer.store import ingest_manifest


def write_parquet(
    path: Path,
    rows: list[dict[str, Any]],
    schema: pa.Schema | None = None,
    spark: bool = False,
    partition_by: list[str] | None = None,
) -> Path:
    """Write rows as one file, or as a Spark-style directory when `spark` is set."""
    table = pa.Table.from_pylist(rows, schema=schema) if rows or schema else pa.table({})
    if not spark:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return path
    path.mkdir(parents=True, exist_ok=True)
    if partition_by:
        pq.write_to_dataset(
            table,
            str(path),
            partition_cols=partition_by,
            basename_template="part-{i}-c000.snappy.parquet",
        )
    else:
        half = max(table.num_rows // 2, 1)
        pq.write_table(table.slice(0, half), path / "part-00000-c000.snappy.parquet")
        pq.write_table(table.slice(half), path / "part-00001-c000.snappy.parquet")
    (path / "_SUCCESS").write_text("")
    return path


class RunBuilder:
    """Writes a run under tmp_path and ingests it into the session database."""

    def __init__(self, root: Path, engine: Engine) -> None:
        self.root = root
        self.engine = engine
        self.count = 0

    def manifest(
        self,
        stages: list[dict[str, Any]],
        outputs: dict[str, list[dict[str, Any]]],
        trace: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] | None = None,
        key: list[str] | None = None,
        key_types: dict[str, str] | None = None,
        run_id: str | None = None,
        schemas: dict[str, pa.Schema] | None = None,
        spark: dict[str, list[str]] | None = None,
    ) -> Path:
        """Write the files and manifest.json; returns the manifest path."""
        self.count += 1
        run_id = run_id or f"run-{self.root.name}-{self.count}"
        folder = self.root / run_id
        schemas = schemas or {}
        spark = spark or {}
        run_outputs = {}
        for name, rows in outputs.items():
            as_dir = name in spark
            target = folder / (name if as_dir else f"{name}.parquet")
            write_parquet(target, rows, schemas.get(name), as_dir, spark.get(name) or None)
            run_outputs[name] = target.name + ("/" if as_dir else "")
        sources, run_trace = [], {}
        for name, (spec, rows) in (trace or {}).items():
            as_dir = name in spark
            target = folder / (name if as_dir else f"{name}.parquet")
            write_parquet(target, rows, schemas.get(name), as_dir, spark.get(name) or None)
            sources.append({"name": name, **spec})
            run_trace[name] = target.name
        manifest = {
            "pipeline": {
                "name": f"p-{run_id}",
                "key": key or ["client_id"],
                "key_types": key_types or {},
                "stages": stages,
                "traceability": sources,
            },
            "run": {"id": run_id, "outputs": run_outputs, "traceability": run_trace},
        }
        path = folder / "manifest.json"
        path.write_text(json.dumps(manifest, indent=2))
        return path

    def run(self, *args: Any, **kwargs: Any) -> str:
        """Write and ingest; returns the run id."""
        return ingest_manifest(self.engine, load_manifest(self.manifest(*args, **kwargs)))

    def report(self, run_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return reconciliation(conn, run_id)

    def journey(self, run_id: str, *key: object) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return journey(conn, run_id, list(key))

    def outcome(self, run_id: str, stage: str, *key: object) -> str | None:
        """The outcome of one key at one stage (None where it has none)."""
        for s in self.journey(run_id, *key)["stages"]:
            if s["stage"] == stage:
                return s["outcome"]
        return None
