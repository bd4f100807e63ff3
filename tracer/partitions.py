"""Partitions of the per-key tables: a dataset's or a run's rows live in a table of their own.

Replacing or dropping one is a DROP TABLE inside the caller's transaction, so
it is atomic and gives the space back at once (no DELETE, no vacuum debt).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, text

from tracer.tables import PARTITIONED_BY_RUN, dataset_keys


def dataset_partition(dataset_id: int) -> str:
    return f"{dataset_keys.name}_d{int(dataset_id)}"


def run_partition(table: str, run_pk: int) -> str:
    return f"{table}_r{int(run_pk)}"


def replace_dataset_partition(conn: Connection, dataset_id: int) -> str:
    """An empty partition for the dataset's keys, dropping the previous one."""
    name = dataset_partition(dataset_id)
    conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
    conn.execute(
        text(
            f"CREATE TABLE {name} PARTITION OF {dataset_keys.name} "
            f"FOR VALUES IN ({int(dataset_id)})"
        )
    )
    return name


def drop_dataset_partitions(conn: Connection, dataset_ids: Iterable[int]) -> None:
    for dataset_id in dataset_ids:
        conn.execute(text(f"DROP TABLE IF EXISTS {dataset_partition(dataset_id)}"))


def replace_run_partitions(conn: Connection, run_pk: int) -> dict[str, str]:
    """Fresh, empty, attached partitions of every run-partitioned table."""
    drop_run_partitions(conn, run_pk)
    names = {}
    for table in PARTITIONED_BY_RUN:
        name = run_partition(table.name, run_pk)
        conn.execute(
            text(f"CREATE TABLE {name} PARTITION OF {table.name} FOR VALUES IN ({int(run_pk)})")
        )
        names[table.name] = name
    return names


def drop_run_partitions(conn: Connection, run_pk: int) -> None:
    for table in PARTITIONED_BY_RUN:
        conn.execute(text(f"DROP TABLE IF EXISTS {run_partition(table.name, run_pk)}"))
