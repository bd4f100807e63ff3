"""Configuration from the environment, read once into one object that the CLI, the API
and the workers all receive.

`DATABASE_URL` unset means the embedded PostgreSQL under `TRACER_HOME`;
`REDIS_URL` unset means jobs run in the serving process.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from tracer.errors import TracerError

SCOPES = ("read", "ingest", "admin")
"""Each scope may do what the ones before it may: admin also ingests, ingest also reads."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("tracer", appauthor=False))


def token_digest(token: str) -> str:
    """Tokens are compared (and could be stored) only as sha256 digests."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ApiToken:
    """What a token may do, and the name logs show for it (never the secret)."""

    scope: str
    name: str

    def allows(self, needed: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(needed)


@dataclass(frozen=True)
class RequestLimits:
    """What the API accepts of one request; anything larger is refused before it costs memory
    or a deep recursion (api/limits.py), with 413, 414, 431 or 400 naming the limit."""

    body_bytes: int = 1 << 20  # TRACER_MAX_BODY_BYTES: a posted manifest (a real one is KBs)
    event_bytes: int = 8 << 20  # TRACER_MAX_EVENT_BYTES: an OpenLineage event, gzip undone
    depth: int = 64  # TRACER_MAX_BODY_DEPTH: nesting of JSON/YAML bodies (events nest ~10)
    url_bytes: int = 8_000  # TRACER_MAX_URL_BYTES: path + query, as sent (percent-escaped)
    header_bytes: int = 16_384  # TRACER_MAX_HEADER_BYTES: all request headers together

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RequestLimits:
        default = cls()
        return cls(
            body_bytes=_positive(env, "TRACER_MAX_BODY_BYTES", default.body_bytes),
            event_bytes=_positive(env, "TRACER_MAX_EVENT_BYTES", default.event_bytes),
            depth=_positive(env, "TRACER_MAX_BODY_DEPTH", default.depth),
            url_bytes=_positive(env, "TRACER_MAX_URL_BYTES", default.url_bytes),
            header_bytes=_positive(env, "TRACER_MAX_HEADER_BYTES", default.header_bytes),
        )


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    """A positive whole number from the environment, or an error naming the variable."""
    text = (env.get(name) or "").strip().replace("_", "")
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise TracerError(f"{name}={env[name]!r}: expected a positive whole number")
    return int(text)


@dataclass(frozen=True)
class Config:
    database_url: str | None = None
    redis_url: str | None = None
    home: Path = field(default_factory=_default_home)
    # sha256(token) -> its scope and name; empty means the API is open.
    api_tokens: Mapping[str, ApiToken] = field(default_factory=dict)
    # Folders the server may read Parquet from; None means the working directory.
    data_roots: tuple[Path, ...] | None = None
    queue_prefix: str = "tracer"
    # How `tracer serve` and `tracer worker` log (tracer.logs): json or text lines on stderr.
    log_format: str = "json"
    log_level: str = "INFO"
    # Request size limits of the API (TRACER_MAX_*).
    limits: RequestLimits = field(default_factory=RequestLimits)

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
            log_format=_one_of(env, "TRACER_LOG_FORMAT", "json", LOG_FORMATS),
            log_level=_one_of(env, "TRACER_LOG_LEVEL", "info", LOG_LEVELS).upper(),
            limits=RequestLimits.from_env(env),
        )

    @property
    def roots(self) -> tuple[Path, ...]:
        return self.data_roots if self.data_roots is not None else (Path.cwd(),)


LOG_FORMATS = ("json", "text")  # tracer.logs.formatter
LOG_LEVELS = ("debug", "info", "warning", "error")


def _one_of(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    """The variable's value, lower-cased, if it is one of `allowed` (any case)."""
    value = (env.get(name) or default).strip()
    if value.lower() not in allowed:
        raise TracerError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
    return value.lower()


def parse_tokens(text: str) -> dict[str, ApiToken]:
    """`read:abc,admin:ops:def` -> {sha256(abc): read "read-<digest>", sha256(def): admin "ops"}.

    An unnamed token is named after its scope and the start of its digest, so logs can tell
    tokens apart without showing one. Errors name the item by position: it may hold a secret.
    """
    tokens: dict[str, ApiToken] = {}
    names: set[str] = set()
    items = [part.strip() for part in text.split(",")]
    for n, item in enumerate((i for i in items if i), start=1):
        at = f"TRACER_API_TOKENS item {n}"
        scope, sep, rest = item.partition(":")
        if not sep or scope not in SCOPES:
            raise TracerError(
                f"{at}: expected 'scope:token' or 'scope:name:token', scope one of "
                f"{', '.join(SCOPES)}"
            )
        name, sep, secret = rest.partition(":")
        if not sep:
            name, secret = "", rest
        if not secret:
            raise TracerError(f"{at} ({scope}): the token is empty")
        digest = token_digest(secret)
        if sep and not NAME.fullmatch(name):
            raise TracerError(  # not echoed: an old token with a ':' in it lands here
                f"{at} ({scope}): the name between the first and second ':' must be 1-64 "
                "letters, digits, '.', '_' or '-' (a token containing ':' needs a name first)"
            )
        name = name or f"{scope}-{digest[:8]}"
        if name in names:
            raise TracerError(f"{at} ({scope}): the name {name!r} is given to two tokens")
        if digest in tokens:
            raise TracerError(f"{at} ({scope}:{name}): the same token is listed twice")
        names.add(name)
        tokens[digest] = ApiToken(scope, name)
    return tokens
