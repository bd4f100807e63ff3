"""The per-key row format ingestion writes and classification reads, and the DuckDB both use.

A chunk is zstd Parquet of `CHUNK_SCHEMA`: one row per (stage, key, reason) of
one dataset, stored in `dataset_chunks`.
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
