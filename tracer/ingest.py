"""Ingestion of one dataset: read its Parquet once, keep rows per key, store them compactly.

DuckDB reads the files (itself where it can, else through pyarrow) and groups by key
in one pass into a table of its own, so what is kept is one row per key (per stage and
reason for traceability), not every raw row; rows read and null-key rows are counted
from that table, and one count of distinct whole-row hashes gives the rows identical to
another (`duplicate_rows` of docs/semantics.md). The per-key rows (tracer.chunks) go
where the caller says: zstd Parquet chunks in Postgres (`dataset_chunks`), so the datasets
of a run can be ingested by workers on different machines, or local files for a run
ingested in one pass. Everything is written in the caller's transaction: a failure leaves
nothing behind.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from sqlalchemy import Connection, delete, func, insert, update

from tracer import keys as keymod
from tracer.chunks import ChunkKind, LocalChunks, duckdb_connection, write_chunks
from tracer.errors import IngestError
from tracer.key_checks import check_key_values
from tracer.limits import describe
from tracer.model import Dataset, DatasetStatus, Pipeline, StageOutput, TraceDataset
from tracer.sources import fingerprint, schema_columns
from tracer.tables import dataset_chunks, datasets

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
    reader = _Reader(dataset, pipeline, source, dataset_id)
    conn.execute(
        delete(dataset_chunks).where(
            dataset_chunks.c.run_pk == run_pk, dataset_chunks.c.dataset_id == dataset_id
        )
    )
    if local is not None:
        keys = reader.load(
            lambda con, rows: local.write(con, dataset_id, rows), local.database.cursor()
        )
    else:

        def store(con: duckdb.DuckDBPyConnection, rows: str) -> int:
            with tempfile.TemporaryDirectory(prefix="tracer-chunks-") as tmp:
                keys, files = write_chunks(con, rows, Path(tmp) / "chunks", "zstd")
                for seq, path in enumerate(files):
                    conn.execute(
                        insert(dataset_chunks).values(
                            run_pk=run_pk, dataset_id=dataset_id, seq=seq, data=path.read_bytes()
                        )
                    )
            return keys

        keys = reader.load(store)
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


Sink = Callable[[duckdb.DuckDBPyConnection, str], int]
"""Stores the chunk rows a query gives (on the connection given) and says how many."""


class _Reader:
    """Runs the grouped DuckDB pass, tallies it, and hands its per-key rows to a sink."""

    def __init__(self, dataset: Dataset, pipeline: Pipeline, source: Any, dataset_id: int) -> None:
        self.dataset = dataset
        self.pipeline = pipeline
        self.source = source
        self.dataset_id = dataset_id
        self.rows_read = 0
        self.duplicate_rows = 0
        self.null_key_rows: dict[str, int] = {}

    def fail(self, message: str, column: str | None = None) -> IngestError:
        return IngestError(self.dataset.name, self.dataset.uri, message, column)

    def load(self, sink: Sink, con: duckdb.DuckDBPyConnection | None = None) -> int:
        """Group the dataset into a DuckDB table, count from it, and give its keyed rows to
        `sink` as one query: no row passes through Python on the way. On `con`, a
        connection of its own (closed here), else on a new DuckDB."""
        con = con or duckdb_connection()
        try:
            # A file can change after validation: whatever DuckDB or pyarrow cannot read
            # (a part file truncated since) is this dataset's error, named as such.
            _as_src(con, self.source)
            self._check_key_casts(con)
            check_key_values(con, self.source, self.dataset, self.pipeline.key_types)
            self._check_reason_nul(con)
            con.execute(f"CREATE TEMP TABLE grouped AS {self._query()}")
            stage = self._stage_index(con)
            self.rows_read, most = con.execute(
                "SELECT coalesce(sum(rows), 0), coalesce(max(rows), 0) FROM grouped"
            ).fetchall()[0]
            self._count_null_keys(con)
            keys = sink(con, self._chunk_select(stage))
            if most > 1:  # else no two rows can be identical
                self.duplicate_rows = self._duplicate_rows(con)
            return keys
        except (duckdb.Error, pa.ArrowException) as exc:
            raise self.fail(f"cannot read: {exc}") from None
        finally:
            con.close()

    def _chunk_select(self, stage: str) -> str:
        """The chunk rows (tracer.chunks.CHUNK_COLUMNS) of the grouped table's keyed rows."""
        d = self.dataset
        kind = (
            ChunkKind.OUTPUT
            if isinstance(d, StageOutput)
            else ChunkKind.REPORTED
            if d.source.reported
            else ChunkKind.OPERATIONAL
        )
        return (
            f"SELECT {int(self.dataset_id)}::INTEGER AS dataset_id, {int(kind)}::TINYINT AS kind, "
            f"({stage})::SMALLINT AS stage, key, rows::INTEGER AS rows, "
            "grains::INTEGER AS grains, reason::VARCHAR AS reason "
            "FROM grouped WHERE key IS NOT NULL"
        )

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
        families = self._families()
        key = self._key()
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
        # Grouped by what varies: a stage output's stage and reason are constants, and
        # grouping by them too cost 0.2 s a dataset at 5M clients.
        varying = [name for name, sql in (("s", stage), ("r", reason)) if sql != "NULL"]
        by = ", ".join(["k", *varying])
        stage_out, reason_out = (n if n in varying else "NULL::VARCHAR" for n in ("s", "r"))
        named = f"{stage_out} AS stage, k AS key, {reason_out} AS reason"
        if grain_hash == "0":  # one grain per key: one grouping
            return f"""
SELECT {named}, count(*)::BIGINT AS rows, 1 AS grains
FROM ({rows})
GROUP BY {by}
"""
        return f"""
SELECT {named}, sum(n)::BIGINT AS rows, count(*) AS grains
FROM (SELECT {by}, g, count(*) AS n FROM ({rows}) GROUP BY {by}, g)
GROUP BY {by}
"""

    def _duplicate_rows(self, con: duckdb.DuckDBPyConnection) -> int:
        """Rows identical to another in every column, hive partition columns included, by a
        64-bit hash of the whole row (docs/semantics.md#stage-flags). Identical rows share
        their key, stage and reason, so only the rows of keys with two rows or more (and of
        no key) are hashed: at 5M clients that took the count from 2.4 to 1.9 s over the
        run's datasets, where most keys have one row. A hash in the grouping itself cost a
        third more CPU at 1M rows."""
        every = ", ".join(keymod.quote_ident(c) for c in self.dataset.schema.names)
        key = self._key()
        return con.execute(
            f"SELECT count(*) - count(DISTINCT hash({every})) FROM src WHERE {key} IS NULL "
            f"OR {key} IN (SELECT key FROM grouped WHERE rows > 1)"
        ).fetchall()[0][0]

    def _families(self) -> list[str | None]:
        d = self.dataset
        return [keymod.type_family(d.schema.field(c).type) for c in d.key_columns]

    def _key(self) -> str:
        """The key as the rows are grouped by it (tracer.keys.duckdb_group_key)."""
        return keymod.duckdb_group_key(
            self.dataset.key_columns, self.pipeline.key_types, self._families()
        )

    def _stage_index(self, con: duckdb.DuckDBPyConnection) -> str:
        """The SQL of each grouped row's stage index; a value naming no stage is an error,
        not a guess."""
        d = self.dataset
        index = self.pipeline.graph.index
        fixed = d.stage.name if isinstance(d, StageOutput) else d.source.stage
        if fixed is not None:
            return str(index[fixed])
        assert isinstance(d, TraceDataset) and d.source.stage_column is not None
        names = list(index)
        unknown = con.execute(
            "SELECT stage FROM grouped WHERE stage IS NULL OR NOT list_contains(?, stage) "
            "ORDER BY stage NULLS FIRST LIMIT 1",
            [names],
        ).fetchall()
        if unknown:
            value = unknown[0][0]
            what = "is empty" if value is None else f"has value {value!r}, which names no stage"
            raise self.fail(
                f"{what} of pipeline {self.pipeline.name!r} (stages: {', '.join(names)})",
                d.source.stage_column,
            )
        return f"list_position({_sql_list(names)}, stage) - 1"

    def _count_null_keys(self, con: duckdb.DuckDBPyConnection) -> None:
        d = self.dataset
        fixed = d.stage.name if isinstance(d, StageOutput) else d.source.stage
        counted = con.execute(
            "SELECT stage, sum(rows) FROM grouped WHERE key IS NULL GROUP BY stage"
        ).fetchall()
        for stage, count in counted:
            name = fixed if fixed is not None else stage
            self.null_key_rows[name] = self.null_key_rows.get(name, 0) + int(count)


def _as_src(con: duckdb.DuckDBPyConnection, source: ds.Dataset) -> None:
    """The dataset as relation `src`: read by DuckDB itself where it can, else scanned
    through pyarrow. At 1M clients DuckDB's own reader took a quarter less time to group
    and hash a dataset. It can when the files are local, hold every column (no hive
    folders) and have no glob character in their paths (DuckDB would expand `a*b/` to
    `aXb/` too)."""
    files = source.files
    native = (
        isinstance(source.filesystem, pafs.LocalFileSystem)
        and bool(files)
        and not any(ch in f for f in files for ch in _DUCKDB_GLOB)
        and next(source.get_fragments()).physical_schema == source.schema
    )
    if native:
        # By name, as pyarrow reads them: a column some part files lack is NULL there.
        con.execute(
            f"CREATE TEMP VIEW src AS SELECT * FROM read_parquet({_sql_list(files)}, "
            "union_by_name = true)"
        )
    else:
        con.register("src", source)


_DUCKDB_GLOB = "*?[{"


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"
