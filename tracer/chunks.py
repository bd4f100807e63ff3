"""The per-key row format ingestion writes and classification reads, and the DuckDB both use.

A chunk is `CHUNK_SCHEMA`: one row per (stage, key, reason) of one dataset. Datasets
ingested one job at a time (possibly on many machines) store theirs in `dataset_chunks`
as zstd Parquet; a run ingested in one pass keeps them in the worker's DuckDB
(`LocalChunks`) and classifies from there.
"""

from __future__ import annotations

import os
from enum import IntEnum

import duckdb
import pyarrow as pa


class ChunkKind(IntEnum):
    """What a chunk row counts toward: out(k), drop_rep(k) or drop_ops(k)."""

    OUTPUT = 0
    REPORTED = 1
    OPERATIONAL = 2


CHUNK_SCHEMA = pa.schema(
    [
        ("dataset_id", pa.int32()),
        ("kind", pa.int8()),  # ChunkKind
        ("stage", pa.int16()),
        ("key", pa.string()),
        ("rows", pa.int32()),
        ("grains", pa.int32()),  # distinct grain values among the key's rows
        ("reason", pa.string()),
    ]
)


def duckdb_connection(memory_limit: str = "1GB") -> duckdb.DuckDBPyConnection:
    """DuckDB bounded in memory (it spills to disk beyond), using every core."""
    return duckdb.connect(config={"threads": os.cpu_count() or 1, "memory_limit": memory_limit})


class LocalChunks:
    """A run's chunks in one DuckDB, table `chunks`: what a one-pass ingestion appends and
    classification reads, where the per-dataset path writes Parquet to Postgres and reads it
    back (at 1M clients that round trip was about a tenth of the run's time)."""

    TABLE = "chunks"

    def __init__(self, duck: duckdb.DuckDBPyConnection) -> None:
        self.duck = duck
        empty = CHUNK_SCHEMA.empty_table()  # noqa: F841 (read by DuckDB by name)
        duck.execute(f"CREATE TABLE {self.TABLE} AS SELECT * FROM empty")

    def append(self, table: pa.Table) -> None:
        self.duck.register("_appended", table)
        try:
            self.duck.execute(f"INSERT INTO {self.TABLE} SELECT * FROM _appended")
        finally:
            self.duck.unregister("_appended")
