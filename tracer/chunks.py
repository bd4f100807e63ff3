"""The per-key row format ingestion writes and classification reads, and the DuckDB both use.

A chunk is Parquet of the columns below: one row per (stage, key, reason) of one dataset.
Datasets ingested one job at a time (possibly on many machines) store theirs in
`dataset_chunks`; a run ingested in one pass keeps them in local files (`LocalChunks`).
"""

from __future__ import annotations

import os
from enum import IntEnum
from pathlib import Path

import duckdb


class ChunkKind(IntEnum):
    """What a chunk row counts toward: out(k), drop_rep(k) or drop_ops(k)."""

    OUTPUT = 0
    REPORTED = 1
    OPERATIONAL = 2


CHUNK_COLUMNS = (
    "dataset_id",  # INTEGER
    "kind",  # TINYINT: ChunkKind
    "stage",  # SMALLINT: index in pipeline order
    # BIGINT for one int64 key component held in an integer column (tracer.keys.
    # groups_as_integer), else VARCHAR: the encoded key; CAST to VARCHAR is the encoded key
    # either way, and files of both kinds read together take the first file's type.
    "key",
    "rows",  # INTEGER
    "grains",  # INTEGER: distinct grain values among the key's rows
    "reason",  # VARCHAR
)


def duckdb_connection(memory_limit: str = "1GB") -> duckdb.DuckDBPyConnection:
    """DuckDB bounded in memory (it spills to disk beyond), using every core."""
    return duckdb.connect(config={"threads": os.cpu_count() or 1, "memory_limit": memory_limit})


class LocalChunks:
    """A run's chunks as Parquet files in a local folder: what a one-pass ingestion writes
    and classification streams, where the per-dataset path writes them to Postgres and
    reads them back (at 1M clients that round trip was about a tenth of the run's time).
    Files rather than a DuckDB table: at 5M clients a table of every chunk pushed the
    classification into spilling, at twice its time and over 1.5 GB."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[int, list[str]] = {}  # dataset id -> its chunk files
        # One DuckDB for every dataset of the run, a connection (`cursor()`) each: a new
        # DuckDB costs about 20 ms, a tenth of ingesting a 1M-client dataset.
        self.database = duckdb_connection()

    def close(self) -> None:
        self.database.close()

    def write(self, con: duckdb.DuckDBPyConnection, dataset_id: int, rows: str) -> int:
        """The chunk rows of query `rows` as more files of the dataset, uncompressed: they
        live only until classified. How many rows."""
        files = self.files.setdefault(dataset_id, [])
        written, paths = write_chunks(
            con, rows, self.folder / f"{dataset_id}-{len(files)}", "uncompressed"
        )
        files.extend(str(p) for p in paths)
        return written


CHUNK_ROWS = 1 << 20
"""Rows in a chunk file, about (a few MB): what one row of `dataset_chunks` holds."""
_ROW_GROUP = 1 << 17


def write_chunks(
    con: duckdb.DuckDBPyConnection, rows: str, folder: Path, compression: str
) -> tuple[int, list[Path]]:
    """The chunk rows of query `rows` as Parquet files of about CHUNK_ROWS rows each in
    `folder`, in order, written by DuckDB in parallel (zstd at 4.7M rows: 0.37 s and 11 MB,
    where pyarrow from Arrow batches took 0.94 s and 20 MB); and how many rows."""
    written = con.execute(
        f"COPY ({rows}) TO '{folder}' (FORMAT parquet, COMPRESSION {compression}, "
        f"ROW_GROUP_SIZE {_ROW_GROUP}, ROW_GROUPS_PER_FILE {CHUNK_ROWS // _ROW_GROUP})"
    ).fetchall()[0][0]
    files = sorted(folder.glob("*.parquet"), key=lambda p: int(p.stem.split("_")[-1]))
    return int(written), files
