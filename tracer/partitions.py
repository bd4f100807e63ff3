"""Run partitions: load a run's derived rows into plain tables, index them, then attach.

Loading outside the partitioned parents keeps index maintenance out of the
bulk load (indexes are built once, after) and keeps the parents' exclusive
lock to the final swap, so readers of other runs are not held up while a run
is classified. Replacing or deleting a run is a DROP TABLE: atomic and the
space comes back at once.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from sqlalchemy import Connection, Table, text
from sqlalchemy.exc import OperationalError

from tracer.tables import NAMING, PARTITIONED_BY_RUN, dataset_chunks

_PARTITIONED = (dataset_chunks, *PARTITIONED_BY_RUN)
_PARTITION_NAME = re.compile(rf"^(?:{'|'.join(t.name for t in _PARTITIONED)})_r\d+(?:_load)?$")


def run_partition(table: str, run_pk: int) -> str:
    return f"{table}_r{int(run_pk)}"


def is_run_partition(name: str) -> bool:
    """A table made per run at ingestion, which migrations must neither create nor drop."""
    return _PARTITION_NAME.match(name) is not None


def ensure_chunk_partition(conn: Connection, run_pk: int) -> None:
    """The run's partition of `dataset_chunks`, where its datasets' rows per key go."""
    name = run_partition(dataset_chunks.name, run_pk)
    conn.execute(
        text(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {dataset_chunks.name} "
            f"FOR VALUES IN ({int(run_pk)})"
        )
    )
    conn.execute(text(f"ALTER TABLE {name} ALTER COLUMN data SET STORAGE EXTERNAL"))
    # Postgres names the inherited key "<name>_pkey"; the metadata's convention says otherwise.
    pk_name = NAMING["pk"] % {"table_name": name}
    conn.execute(text(f"ALTER INDEX IF EXISTS {name}_pkey RENAME TO {pk_name}"))


def create_loading_tables(conn: Connection, run_pk: int) -> dict[str, str]:
    names = {}
    for table in PARTITIONED_BY_RUN:
        name = run_partition(table.name, run_pk) + "_load"
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
        conn.execute(text(f"CREATE TABLE {name} (LIKE {table.name} INCLUDING DEFAULTS)"))
        names[table.name] = name
    return names


def _index_names(table: Table, name: str) -> list[tuple[str, str, str]]:
    """(name by the metadata's convention, columns, WHERE clause or '') of the key and the
    indexes of `name`."""
    named = []
    if table.primary_key.columns:
        columns = ", ".join(c.name for c in table.primary_key.columns)
        named.append((NAMING["pk"] % {"table_name": name}, columns, ""))
    for index in table.indexes:
        first = next(iter(index.columns)).name
        columns = ", ".join(c.name for c in index.columns)
        where = index.dialect_options["postgresql"]["where"]
        clause = f" WHERE {where}" if where is not None else ""
        named.append((NAMING["ix"] % {"column_0_label": f"{name}_{first}"}, columns, clause))
    return named


_FULL_PAGES = "fillfactor = 100"


def index_loaded_table(conn: Connection, run_pk: int, table: Table) -> None:
    """Build the key and indexes of `table`'s loaded run partition, once, on the full table;
    ATTACH adopts them instead of building its own. Full pages: a run's rows are never
    updated, only dropped with it (a tenth less)."""
    pk = int(run_pk)
    loading = run_partition(table.name, pk) + "_load"
    for position, (name, columns, where) in enumerate(_index_names(table, loading)):
        if position == 0 and table.primary_key.columns:
            conn.execute(
                text(
                    f"ALTER TABLE {loading} ADD CONSTRAINT {name} PRIMARY KEY ({columns}) "
                    f"WITH ({_FULL_PAGES})"
                )
            )
        else:
            index = f"CREATE INDEX {name} ON {loading} ({columns})"
            conn.execute(text(f"{index} WITH ({_FULL_PAGES}){where}"))
    # Proves the partition bound up front, so ATTACH skips its own scan.
    conn.execute(text(f"ALTER TABLE {loading} ADD CHECK (run_pk = {pk})"))


def attach_loaded_tables(conn: Connection, run_pk: int, indexed: Collection[str] = ()) -> None:
    """Index the loaded tables (but those named in `indexed`, done already), then swap them
    in for the run's current partitions."""
    pk = int(run_pk)
    for table in PARTITIONED_BY_RUN:
        if table.name not in indexed:
            index_loaded_table(conn, pk, table)
    _lock_published(conn)
    for table in PARTITIONED_BY_RUN:
        final = run_partition(table.name, pk)
        conn.execute(text(f"DROP TABLE IF EXISTS {final}"))
        conn.execute(text(f"ALTER TABLE {final}_load RENAME TO {final}"))
        for (old, *_), (new, *_) in zip(
            _index_names(table, f"{final}_load"), _index_names(table, final), strict=True
        ):
            conn.execute(text(f"ALTER INDEX {old} RENAME TO {new}"))
        conn.execute(
            text(f"ALTER TABLE {table.name} ATTACH PARTITION {final} FOR VALUES IN ({pk})")
        )


PUBLISHED_LOCK = ", ".join(f"ONLY {t.name}" for t in PARTITIONED_BY_RUN)
"""The parents of what a classification publishes, in the one order everyone locks them."""


def lock_for_reading(conn: Connection) -> None:
    """Readers: first, so a classification is seen whole (never the run's row of one and the
    keys of the next) and a swap waits for them, or they for it, without a deadlock."""
    conn.execute(text(f"LOCK TABLE {PUBLISHED_LOCK} IN ACCESS SHARE MODE"))


def _lock_published(conn: Connection) -> None:
    """All the parents at once before the swap, never holding one while waiting for another:
    a reader holding one of them and waiting for another would otherwise deadlock with it."""
    while True:
        try:
            with conn.begin_nested():
                conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
                conn.execute(text(f"LOCK TABLE {PUBLISHED_LOCK} IN ACCESS EXCLUSIVE MODE"))
            break
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                raise
    conn.execute(text("SET LOCAL lock_timeout TO DEFAULT"))


def drop_run_partitions(conn: Connection, run_pk: int) -> None:
    """Everything stored for the run: its chunks and what was derived from them."""
    _lock_published(conn)  # readers of other runs wait, never deadlock
    for table in _PARTITIONED:
        name = run_partition(table.name, run_pk)
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
        conn.execute(text(f"DROP TABLE IF EXISTS {name}_load"))
