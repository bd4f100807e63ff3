"""Engines and migrations: one code path for a configured server and the embedded one."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine

import migrations
from tracer.config import Config


def database_url(config: Config) -> str:
    """The configured URL, or the embedded server's (started on demand)."""
    if config.database_url:
        return normalise_url(config.database_url)
    from tracer.embedded import embedded_url

    return embedded_url(config.home)


def normalise_url(url: str) -> str:
    """Accept the plain `postgresql://` URLs libpq users write; tracer speaks psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(config: Config | None = None) -> Engine:
    config = config or Config.from_env()
    return create_engine(database_url(config), pool_pre_ping=True)


def alembic_config(engine: Engine) -> AlembicConfig:
    folder = Path(migrations.__file__).parent
    cfg = AlembicConfig(str(folder / "alembic.ini"))
    cfg.set_main_option("script_location", str(folder))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations; tests use this too, so the migrations are what is tested."""
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
