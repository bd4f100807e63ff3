"""Ingestion of one dataset: read its Parquet once, keep rows per key, store them compactly.

DuckDB scans the pyarrow dataset (projection pushed down, streamed) and groups
by key in one pass, so what is kept is one row per key (per stage and reason
for traceability), not every raw row. The same pass counts null-key rows; one
count of distinct whole-row hashes gives the rows identical to another
(`duplicate_rows` of docs/semantics.md). The per-key rows are stored in Postgres as
zstd-compressed Parquet chunks (`dataset_chunks`): Postgres stays the one
shared store, so the datasets of a run can be ingested by workers on different
machines, and the classifier reads them back at Parquet speed. Everything is
written in the caller's transaction: a failure leaves nothing behind.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Connection, delete, func, insert, update

from tracer import keys as keymod
from tracer.chunks import CHUNK_SCHEMA, ChunkKind, LocalChunks, duckdb_connection
from tracer.errors import IngestError
from tracer.key_checks import check_key_values
from tracer.limits import describe
from tracer.model import Dataset, DatasetStatus, Pipeline, StageOutput, TraceDataset
from tracer.sources import fingerprint, schema_columns
from tracer.tables import dataset_chunks, datasets

_CHUNK_ROWS = 1 << 20

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
    run_pk: int,
    dataset_id: int,
    dataset: Dataset,
    pipeline: Pipeline,
    previous_fingerprint: str | None = None,
    progress: Progress | None = None,
    local: LocalChunks | None = None,
) -> IngestResult:
    """Load `dataset` as dataset row `dataset_id`, unless its content is unchanged.

    Its chunks go to `dataset_chunks`, or to `local` for a run ingested in one pass (which
    stores none: its earlier ones, if any, are deleted as stale).
    """
    source, digest = opened(dataset)
    if digest == previous_fingerprint:  # its chunks are those of this content
        conn.execute(
            update(datasets)
            .where(datasets.c.id == dataset_id)
            .values(status=DatasetStatus.INGESTED, error=None)
        )
        return IngestResult(dataset.name, skipped=True, rows=0, keys=0)
    reader = _Reader(dataset, pipeline, source)
    conn.execute(
        delete(dataset_chunks).where(
            dataset_chunks.c.run_pk == run_pk, dataset_chunks.c.dataset_id == dataset_id
        )
    )
    keys = 0
    for seq, table in enumerate(reader.chunks(dataset_id)):
        if local is not None:
            local.append(dataset_id, table)
        else:
            conn.execute(
                insert(dataset_chunks).values(
                    run_pk=run_pk, dataset_id=dataset_id, seq=seq, data=_parquet_bytes(table)
                )
            )
        keys += table.num_rows
    conn.execute(
        update(datasets)
        .where(datasets.c.id == dataset_id)
        .values(
            fingerprint=digest,
            row_count=reader.rows_read,
            key_count=keys,
            null_key_rows=reader.null_key_rows,
            duplicate_rows=reader.duplicate_rows,
            columns=schema_columns(source.schema),
            status=DatasetStatus.INGESTED,
            error=None,
            ingested_at=func.now(),
        )
    )
    if progress:
        progress(dataset.name, reader.rows_read)
    return IngestResult(dataset.name, skipped=False, rows=reader.rows_read, keys=keys)


def opened(dataset: Dataset) -> tuple[Any, str]:
    """The dataset's pyarrow source and the fingerprint of its content."""
    try:
        source = dataset.open()
        return source, fingerprint(source)
    except (OSError, pa.ArrowException) as exc:
        raise IngestError(dataset.name, dataset.uri, f"cannot read: {exc}") from None


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", compression_level=1)
    return buffer.getvalue()


class _Reader:
    """Runs the grouped DuckDB pass and hands chunks of per-key rows to the caller."""

    def __init__(self, dataset: Dataset, pipeline: Pipeline, source: Any) -> None:
        self.dataset = dataset
        self.pipeline = pipeline
        self.source = source
        self.rows_read = 0
        self.duplicate_rows = 0
        self.shared_groups = False  # some (stage, key, reason) group holds more than one row
        self.null_key_rows: dict[str, int] = {}

    def fail(self, message: str, column: str | None = None) -> IngestError:
        return IngestError(self.dataset.name, self.dataset.uri, message, column)

    def chunks(self, dataset_id: int) -> Iterator[pa.Table]:
        con = duckdb_connection()
        try:
            con.register("src", self.source)
            self._check_key_casts(con)
            check_key_values(con, self.source, self.dataset, self.pipeline.key_types)
            self._check_reason_nul(con)
            try:
                reader = con.sql(self._query()).to_arrow_reader(_CHUNK_ROWS)
                # DuckDB hands out batches per thread, often small: regroup into full chunks.
                pending: list[pa.Table] = []
                for batch in reader:
                    pending.append(self._chunk(batch, dataset_id))
                    if sum(t.num_rows for t in pending) >= _CHUNK_ROWS:
                        yield pa.concat_tables(pending)
                        pending = []
                if pending:
                    yield pa.concat_tables(pending)
                if self.shared_groups:  # else no two rows can be identical
                    self.duplicate_rows = self.rows_read - self._distinct_rows(con)
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
                    f"value {describe(bad[0])} is not an integer, but the key is declared int64",
                    column,
                )

    def _check_reason_nul(self, con: duckdb.DuckDBPyConnection) -> None:
        """A NUL character in a reason: Postgres text cannot hold it, so say where. (Keys
        were checked for every control character by `check_key_values`.)"""
        if not isinstance(self.dataset, TraceDataset) or not self.dataset.source.reason_column:
            return
        column = self.dataset.source.reason_column
        if keymod.type_family(self.dataset.schema.field(column).type) != "string":
            return
        col = keymod.quote_ident(column)
        found = f"SELECT {col} FROM src WHERE strpos({col}, chr(0)) > 0 LIMIT 1"
        bad = con.execute(found).fetchone()
        if bad is not None:
            raise self.fail(f"value {describe(bad[0])} contains a NUL character", column)

    def _query(self) -> str:
        """Rows and distinct grains per key, by nested grouping.

        Grouping by (key, grain hash) first and rolling up is markedly faster in
        DuckDB than count(DISTINCT ...) per key.
        """
        d = self.dataset
        families = [keymod.type_family(d.schema.field(c).type) for c in d.key_columns]
        key = keymod.duckdb_group_key(d.key_columns, self.pipeline.key_types, families)
        if isinstance(d, StageOutput):
            mapping = dict(zip(self.pipeline.key, d.key_columns, strict=True))
            grain = [mapping.get(c, c) for c in d.stage.grain]
            present = [c for c in grain if c in d.schema.names]
            quoted = ", ".join(keymod.quote_ident(c) for c in present)
            grain_hash = f"hash({quoted})" if present else "0"
            # The grain is the key itself, grouped as its integer: one grain per key.
            if present == list(d.key_columns) and keymod.groups_as_integer(
                self.pipeline.key_types, families
            ):
                grain_hash = "0"
            stage, reason = "NULL", "NULL"
        else:
            source = d.source
            grain_hash = "0"
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
        rows = f"SELECT {stage} AS s, {key} AS k, {reason} AS r, {grain_hash} AS g FROM src"
        if grain_hash == "0":  # one grain per key: one grouping
            return f"""
SELECT s AS stage, CAST(k AS VARCHAR) AS key, r AS reason, count(*)::BIGINT AS rows,
       1 AS grains
FROM ({rows})
GROUP BY s, k, r
"""
        return f"""
SELECT s AS stage, CAST(k AS VARCHAR) AS key, r AS reason, sum(n)::BIGINT AS rows,
       count(*) AS grains
FROM (SELECT s, k, r, g, count(*) AS n FROM ({rows}) GROUP BY ALL)
GROUP BY s, k, r
"""

    def _distinct_rows(self, con: duckdb.DuckDBPyConnection) -> int:
        """Rows distinct in every column, hive partition columns included, by a 64-bit hash
        of the whole row (docs/semantics.md#stage-flags). Identical rows share their key,
        stage and reason, so this is the per-key count summed: one count over the dataset,
        where a hash in the grouping above cost a third more CPU at 1M rows. Only asked
        when some group holds two rows or more: otherwise no two rows are alike."""
        every = ", ".join(keymod.quote_ident(c) for c in self.dataset.schema.names)
        return con.execute(f"SELECT count(DISTINCT hash({every})) FROM src").fetchall()[0][0]

    def _chunk(self, batch: pa.RecordBatch, dataset_id: int) -> pa.Table:
        rows = batch.column("rows")
        total = pc.sum(rows).as_py() or 0
        self.rows_read += total
        self.shared_groups = self.shared_groups or (pc.max(rows).as_py() or 0) > 1
        stages = self._stage_indexes(batch.column("stage"))
        null = pc.is_null(batch.column("key"))
        if pc.any(null).as_py():
            self._count_null_keys(stages, rows, null)
        d = self.dataset
        kind = (
            ChunkKind.OUTPUT
            if isinstance(d, StageOutput)
            else ChunkKind.REPORTED
            if d.source.reported
            else ChunkKind.OPERATIONAL
        )
        n = batch.num_rows
        table = pa.table(
            [
                pa.repeat(pa.scalar(dataset_id, pa.int32()), n),
                pa.repeat(pa.scalar(int(kind), pa.int8()), n),
                stages,
                batch.column("key"),
                pc.cast(rows, pa.int32()),
                pc.cast(batch.column("grains"), pa.int32()),
                batch.column("reason"),
            ],
            schema=CHUNK_SCHEMA,
        )
        return table.filter(pc.invert(null))

    def _stage_indexes(self, column: pa.Array) -> pa.Array:
        """Map stage names to indexes; a value naming no stage is an error, not a guess."""
        d = self.dataset
        n = len(column)
        fixed = d.stage.name if isinstance(d, StageOutput) else d.source.stage
        if fixed is not None:
            return pa.repeat(pa.scalar(self.pipeline.graph.index[fixed], pa.int16()), n)
        assert isinstance(d, TraceDataset) and d.source.stage_column is not None
        names = pa.array(list(self.pipeline.graph.index))
        unknown = pc.unique(pc.filter(column, pc.invert(pc.is_in(column, names))))
        if len(unknown):
            value = unknown[0].as_py()
            what = "is empty" if value is None else f"has value {value!r}, which names no stage"
            raise self.fail(
                f"{what} of pipeline {self.pipeline.name!r} (stages: "
                f"{', '.join(names.to_pylist())})",
                d.source.stage_column,
            )
        return pc.cast(pc.index_in(column, names), pa.int16())

    def _count_null_keys(self, stages: pa.Array, rows: pa.Array, null: pa.Array) -> None:
        names = self.pipeline.graph.order
        for stage, count in zip(
            pc.filter(stages, null).to_pylist(), pc.filter(rows, null).to_pylist(), strict=True
        ):
            name = names[stage]
            self.null_key_rows[name] = self.null_key_rows.get(name, 0) + count
