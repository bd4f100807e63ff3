"""Configuration from the environment, read once into one object.

`DATABASE_URL` unset means the embedded PostgreSQL under `TRACER_HOME`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("tracer", appauthor=False))


@dataclass(frozen=True)
class Config:
    database_url: str | None = None
    redis_url: str | None = None
    home: Path = field(default_factory=_default_home)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        home = env.get("TRACER_HOME")
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            home=Path(home).expanduser() if home else _default_home(),
        )
