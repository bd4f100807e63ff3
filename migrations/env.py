"""Alembic environment: the URL comes from DATABASE_URL (or the engine tracer passes in)."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Engine, create_engine

from tracer.config import Config
from tracer.db import database_url
from tracer.partitions import is_run_partition
from tracer.tables import metadata

config = context.config
target_metadata = metadata


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Leave the per-run partitions alone: autogenerate would otherwise propose dropping runs."""
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return not (table and is_run_partition(table))


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    return create_engine(database_url(Config.from_env()))


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(Config.from_env()),
        target_metadata=target_metadata,
        include_object=include_object,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    with _engine().connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
