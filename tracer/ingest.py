"""Ingestion of one dataset: read its Parquet, keep rows per key, COPY them into its partition.

DuckDB scans the pyarrow dataset (projection pushed down, streamed in record
batches) and groups by key in one pass, so Postgres receives one row per key
(per stage and reason for traceability) instead of every raw row. The same pass
counts null-key rows and, from a hash of every column, the rows identical to
another (`duplicate_rows` of lineage-semantics.md). The COPY and the dataset's
bookkeeping run in the caller's transaction: a failure leaves nothing behind.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Connection, func, update

from tracer import keys as keymod
from tracer.errors import IngestError
from tracer.manifest import Dataset, Pipeline
from tracer.partitions import replace_dataset_partition
from tracer.sources import fingerprint, schema_columns
from tracer.tables import datasets

KIND_OUTPUT, KIND_REPORTED, KIND_OPERATIONAL = 0, 1, 2
COPY_COLUMNS = ("dataset_id", "kind", "stage", "key", "rows", "grains", "reason")
_BATCH_ROWS = 256 * 1024
# Quote every string but leave NULL bare: Postgres CSV reads "" as '' and a bare field as NULL.
_CSV_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")

Progress = Callable[[str, int], None]
"""Called with (dataset name, rows read) once a dataset is loaded."""


@dataclass(frozen=True)
class IngestResult:
    dataset: str
    skipped: bool
    rows: int
    keys: int


def ingest_dataset(
    conn: Connection,
    dataset_id: int,
    dataset: Dataset,
    pipeline: Pipeline,
    previous_fingerprint: str | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Load `dataset` as dataset row `dataset_id`, unless its content is unchanged."""
    try:
        source = dataset.open()
        digest = fingerprint(source)
    except (OSError, pa.ArrowException) as exc:
        raise IngestError(dataset.name, dataset.uri, f"cannot read: {exc}") from None
    if digest == previous_fingerprint:
        return IngestResult(dataset.name, skipped=True, rows=0, keys=0)
    reader = _Reader(dataset, pipeline, source)
    partition = replace_dataset_partition(conn, dataset_id)
    keys_loaded = 0
    with _cursor(conn).copy(
        f"COPY {partition} ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT csv)"
    ) as copy:
        for batch in reader.batches(dataset_id):
            buffer = io.BytesIO()
            pacsv.write_csv(batch, buffer, _CSV_OPTIONS)
            copy.write(buffer.getvalue())
            keys_loaded += batch.num_rows
    conn.execute(
        update(datasets)
        .where(datasets.c.id == dataset_id)
        .values(
            fingerprint=digest,
            row_count=reader.rows_read,
            null_key_rows=reader.null_key_rows,
            duplicate_rows=reader.duplicate_rows,
            columns=schema_columns(source.schema),
            status="ingested",
            error=None,
            ingested_at=func.now(),
        )
    )
    if progress:
        progress(dataset.name, reader.rows_read)
    return IngestResult(dataset.name, skipped=False, rows=reader.rows_read, keys=keys_loaded)


def _cursor(conn: Connection) -> Any:
    return conn.connection.driver_connection.cursor()


class _Reader:
    """Runs the grouped DuckDB pass and hands Postgres-ready batches to the COPY."""

    def __init__(self, dataset: Dataset, pipeline: Pipeline, source: Any) -> None:
        self.dataset = dataset
        self.pipeline = pipeline
        self.source = source
        self.rows_read = 0
        self.duplicate_rows = 0
        self.null_key_rows: dict[str, int] = {}

    def fail(self, message: str, column: str | None = None) -> IngestError:
        return IngestError(self.dataset.name, self.dataset.uri, message, column)

    def batches(self, dataset_id: int) -> Any:
        con = duckdb.connect(config={"threads": os.cpu_count() or 1})
        try:
            con.register("src", self.source)
            self._check_key_casts(con)
            try:
                reader = con.sql(self._query()).to_arrow_reader(_BATCH_ROWS)
                for batch in reader:
                    yield self._to_copy(batch, dataset_id)
            except duckdb.Error as exc:
                raise self.fail(f"cannot read: {exc}") from None
        finally:
            con.close()

    def _check_key_casts(self, con: duckdb.DuckDBPyConnection) -> None:
        """A string column under an int64 key: name the first value that is not an integer."""
        for column, key_type in zip(self.dataset.key_columns, self.pipeline.key_types, strict=True):
            family = keymod.type_family(self.dataset.schema.field(column).type)
            if key_type != "int64" or family == "int64":
                continue
            col = keymod.quote_ident(column)
            bad = con.execute(
                f"SELECT {col} FROM src WHERE NULLIF(trim({col}), '') IS NOT NULL "
                f"AND TRY_CAST(trim({col}) AS BIGINT) IS NULL LIMIT 1"
            ).fetchone()
            if bad is not None:
                raise self.fail(
                    f"value {bad[0]!r} is not an integer, but the key is declared int64",
                    column,
                )

    def _query(self) -> str:
        d = self.dataset
        key = keymod.duckdb_key(d.key_columns, self.pipeline.key_types)
        every = ", ".join(keymod.quote_ident(c) for c in d.schema.names)
        if d.role == "output":
            assert d.stage is not None
            mapping = dict(zip(self.pipeline.key, d.key_columns, strict=True))
            grain = [mapping.get(c, c) for c in d.stage.grain]
            present = [keymod.quote_ident(c) for c in grain if c in d.schema.names]
            grain_hash = f"hash({', '.join(present)})" if present else "0"
            return (
                f"SELECT NULL AS stage, k AS key, NULL AS reason, count(*) AS rows, "
                f"count(DISTINCT g) AS grains, count(DISTINCT h) AS distinct_rows "
                f"FROM (SELECT {key} AS k, {grain_hash} AS g, hash({every}) AS h FROM src) "
                f"GROUP BY k"
            )
        source = d.source
        assert source is not None
        stage = (
            f"trim(CAST({keymod.quote_ident(source.stage_column)} AS VARCHAR))"
            if source.stage_column
            else "NULL"
        )
        reason = (
            f"CAST({keymod.quote_ident(source.reason_column)} AS VARCHAR)"
            if source.reason_column
            else "NULL"
        )
        return (
            f"SELECT s AS stage, k AS key, r AS reason, count(*) AS rows, "
            f"count(*) AS grains, count(DISTINCT h) AS distinct_rows "
            f"FROM (SELECT {stage} AS s, {key} AS k, {reason} AS r, hash({every}) AS h FROM src) "
            f"GROUP BY s, k, r"
        )

    def _to_copy(self, batch: pa.RecordBatch, dataset_id: int) -> pa.RecordBatch:
        rows = batch.column("rows")
        self.rows_read += pc.sum(rows).as_py() or 0
        self.duplicate_rows += (pc.sum(rows).as_py() or 0) - (
            pc.sum(batch.column("distinct_rows")).as_py() or 0
        )
        stages = self._stage_indexes(batch.column("stage"))
        null = pc.is_null(batch.column("key"))
        if pc.any(null).as_py():
            self._count_null_keys(stages, rows, null)
        keep = pc.invert(null)
        kind = (
            KIND_OUTPUT
            if self.dataset.role == "output"
            else KIND_REPORTED
            if self.dataset.source and self.dataset.source.reported
            else KIND_OPERATIONAL
        )
        n = batch.num_rows
        table = pa.record_batch(
            [
                pa.array([dataset_id] * n, pa.int32()) if n else pa.array([], pa.int32()),
                pa.array([kind] * n, pa.int16()) if n else pa.array([], pa.int16()),
                stages,
                batch.column("key"),
                rows,
                batch.column("grains"),
                batch.column("reason"),
            ],
            names=list(COPY_COLUMNS),
        )
        return table.filter(keep)

    def _stage_indexes(self, column: pa.Array) -> pa.Array:
        """Map stage names to indexes; a value naming no stage is an error, not a guess."""
        d = self.dataset
        n = len(column)
        if d.role == "output" or (d.source and d.source.stage):
            name = d.stage.name if d.stage else d.source.stage  # type: ignore[union-attr]
            return pa.array([self.pipeline.graph.index[name]] * n, pa.int16())
        assert d.source is not None and d.source.stage_column is not None
        index = self.pipeline.graph.index
        names = list(index)
        unknown = pc.unique(pc.filter(column, pc.invert(pc.is_in(column, pa.array(names)))))
        if len(unknown):
            value = unknown[0].as_py()
            what = "is empty" if value is None else f"has value {value!r}, which names no stage"
            raise self.fail(
                f"{what} of pipeline {self.pipeline.name!r} (stages: {', '.join(names)})",
                d.source.stage_column,
            )
        return pc.cast(pc.index_in(column, pa.array(names)), pa.int16())

    def _count_null_keys(self, stages: pa.Array, rows: pa.Array, null: pa.Array) -> None:
        names = self.pipeline.graph.order
        for stage, count in zip(
            pc.filter(stages, null).to_pylist(), pc.filter(rows, null).to_pylist(), strict=True
        ):
            name = names[stage]
            self.null_key_rows[name] = self.null_key_rows.get(name, 0) + count
