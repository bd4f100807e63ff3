"""Configuration from the environment, read once into one object that the CLI, the API
and the workers all receive.

`DATABASE_URL` unset means the embedded PostgreSQL under `TRACER_HOME`;
`REDIS_URL` unset means jobs run in the serving process.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from tracer.errors import TracerError

SCOPES = ("read", "ingest")


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("tracer", appauthor=False))


def token_digest(token: str) -> str:
    """Tokens are compared (and could be stored) only as sha256 digests."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Config:
    database_url: str | None = None
    redis_url: str | None = None
    home: Path = field(default_factory=_default_home)
    # sha256(token) -> scope; empty means the API is open.
    api_tokens: Mapping[str, str] = field(default_factory=dict)
    # Folders the server may read Parquet from; None means the working directory.
    data_roots: tuple[Path, ...] | None = None
    queue_prefix: str = "tracer"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        home = env.get("TRACER_HOME")
        roots = env.get("TRACER_DATA_ROOTS")
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            home=Path(home).expanduser() if home else _default_home(),
            api_tokens=parse_tokens(env.get("TRACER_API_TOKENS", "")),
            data_roots=tuple(Path(r).expanduser() for r in roots.split(os.pathsep) if r)
            if roots
            else None,
            queue_prefix=env.get("TRACER_QUEUE_PREFIX") or "tracer",
        )

    @property
    def roots(self) -> tuple[Path, ...]:
        return self.data_roots if self.data_roots is not None else (Path.cwd(),)


def parse_tokens(text: str) -> dict[str, str]:
    """`read:abc,ingest:def` -> {sha256(abc): "read", sha256(def): "ingest"}."""
    tokens: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        scope, sep, token = item.partition(":")
        if not sep or scope not in SCOPES or not token:
            raise TracerError(
                f"TRACER_API_TOKENS: {item.split(':')[0]!r}... is not 'read:<token>' or "
                "'ingest:<token>'"
            )
        tokens[token_digest(token)] = scope
    return tokens
