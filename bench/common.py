"""What the benchmarks share: tracer's entry points and a throwaway database."""

from __future__ import annotations

import os
import types
from collections.abc import Iterator
from contextlib import contextmanager

ADMIN_URL = os.environ.get(
    "TRACER_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def tracer_api() -> types.SimpleNamespace:
    """Imported on demand, so the reference-only modes run without a database driver."""
    from tracer import db
    from tracer.config import Config
    from tracer.manifest import load_manifest
    from tracer.queries.reconciliation import reconciliation
    from tracer.runs import delete_run, ingest_manifest
    from tracer.tables import runs

    return types.SimpleNamespace(
        db=db,
        Config=Config,
        load_manifest=load_manifest,
        ingest_manifest=ingest_manifest,
        reconciliation=reconciliation,
        delete_run=delete_run,
        runs=runs,
    )


@contextmanager
def database(prefix: str) -> Iterator[tuple[str, bool]]:
    """(url, shared): DATABASE_URL as it is, or a throwaway database dropped afterwards."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url, True
        return
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{os.getpid()}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name, False
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
