"""What /health reports and /metrics reads at scrape time: Postgres, Redis and the queues.

Both ask through probes of their own, with short timeouts (a connection within 2 s, a
statement within 2 s, Redis within 1 s), so a dependency that is down, or silently
dropping packets, makes them answer in about 2 s instead of hanging with the app's engine.
Postgres and Redis are checked at the same time, so the slowest check bounds the answer.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

from alembic.script import ScriptDirectory
from flask import Flask, current_app
from marshmallow import Schema, fields
from redis import Redis
from sqlalchemy import Connection, Engine, create_engine, text

from api.state import State
from tracer import db
from tracer.errors import summary
from workers.queue_stats import figures, listening_workers

CONNECT_TIMEOUT_S = 2  # libpq's (and psycopg's) minimum
STATEMENT_TIMEOUT_MS = 2000
REDIS_TIMEOUT_S = 1.0
NOT_CONFIGURED = "not configured (in-process jobs)"


@dataclass(frozen=True)
class Probes:
    engine: Engine
    redis: Redis | None
    pool: ThreadPoolExecutor


def probes(app: Flask | None = None) -> Probes:
    """The app's probes, made on first use (so in each gunicorn worker, after the fork)."""
    app = app or current_app
    found = app.extensions.get("tracer.probes")
    if found is None:
        state: State = app.extensions["tracer"]
        engine = create_engine(
            state.engine.url,
            pool_size=1,
            max_overflow=2,
            pool_pre_ping=True,
            pool_timeout=CONNECT_TIMEOUT_S,
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_S,
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            },
        )
        redis = None
        if state.config.redis_url:
            redis = Redis.from_url(
                state.config.redis_url,
                socket_connect_timeout=REDIS_TIMEOUT_S,
                socket_timeout=REDIS_TIMEOUT_S,
            )
        found = Probes(engine, redis, ThreadPoolExecutor(4, "tracer-probe"))
        app.extensions["tracer.probes"] = found
    return found


class PostgresCheckSchema(Schema):
    ok = fields.Boolean(required=True)
    latency_ms = fields.Float(allow_none=True, required=True)
    revision = fields.String(
        allow_none=True, required=True, metadata={"description": "The schema's migration"}
    )
    head = fields.String(required=True, metadata={"description": "The code's latest migration"})
    schema_current = fields.Boolean(
        required=True, metadata={"description": "`tracer db upgrade` has nothing to do"}
    )
    error = fields.String(allow_none=True, required=True)


class RedisCheckSchema(Schema):
    ok = fields.Boolean(required=True)
    configured = fields.Boolean(
        required=True, metadata={"description": "false: no REDIS_URL, jobs run in-process"}
    )
    latency_ms = fields.Float(allow_none=True, required=True)
    error = fields.String(
        allow_none=True, required=True, metadata={"example": "not configured (in-process jobs)"}
    )


class QueueCheckSchema(Schema):
    backlog = fields.Integer(required=True, metadata={"description": "Jobs queued, not started"})
    started = fields.Integer(required=True)
    failed = fields.Integer(required=True, metadata={"description": "Failed jobs still kept"})
    workers = fields.Integer(required=True, metadata={"description": "Workers listening"})


class HealthSchema(Schema):
    ok = fields.Boolean(
        required=True, metadata={"description": "false (and 503) when Postgres, or Redis if "
                                 "configured, does not answer"}
    )  # fmt: skip
    problems = fields.List(
        fields.String(), required=True, metadata={"example": ["redis: connection refused"]}
    )
    postgres = fields.Nested(PostgresCheckSchema, required=True)
    redis = fields.Nested(RedisCheckSchema, required=True)
    queue = fields.Nested(
        QueueCheckSchema,
        allow_none=True,
        required=True,
        metadata={"description": "null while Redis does not answer"},
    )


def health(app: Flask | None = None) -> dict[str, Any]:
    """The report: every check, and `ok` only if Postgres and any configured Redis answer."""
    app = app or current_app
    state: State = app.extensions["tracer"]
    p = probes(app)
    postgres = p.pool.submit(_postgres, p.engine)
    redis = _redis(p.redis)
    report = {
        "ok": False,
        "problems": [],
        "postgres": postgres.result(),
        "redis": redis,
        "queue": _queue(state, p.redis) if redis["ok"] else None,
    }
    report["problems"] = [
        f"{name}: {report[name]['error']}"
        for name in ("postgres", "redis")
        if not report[name]["ok"]
    ]
    report["ok"] = not report["problems"]
    return report


def _postgres(engine: Engine) -> dict[str, Any]:
    head = _head()
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            latency = _ms(started)
            revision = _revision(conn)
    except Exception as exc:  # any failure means unhealthy; the message says which
        return {"ok": False, "latency_ms": None, "revision": None, "head": head,
                "schema_current": False, "error": summary(exc)}  # fmt: skip
    return {"ok": True, "latency_ms": latency, "revision": revision, "head": head,
            "schema_current": revision == head, "error": None}  # fmt: skip


def _redis(redis: Redis | None) -> dict[str, Any]:
    if redis is None:
        return {"ok": True, "configured": False, "latency_ms": None, "error": NOT_CONFIGURED}
    started = time.perf_counter()
    try:
        redis.ping()
    except Exception as exc:
        return {"ok": False, "configured": True, "latency_ms": None, "error": summary(exc)}
    return {"ok": True, "configured": True, "latency_ms": _ms(started), "error": None}


def _queue(state: State, redis: Redis | None) -> dict[str, int] | None:
    try:
        queues = figures(state.dispatcher, redis, state.config)
    except Exception:  # Redis went away between the ping and now: no figures
        return None
    total = {s: sum(q.jobs[s] for q in queues) for s in ("queued", "started", "failed")}
    return {"backlog": total["queued"], "started": total["started"], "failed": total["failed"],
            "workers": listening_workers(queues)}  # fmt: skip


def _revision(conn: Connection) -> str | None:
    """The schema's migration (alembic's own reader logs two lines per call: not per probe)."""
    if not conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar():
        return None
    found = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return ",".join(sorted(found)) or None


@cache
def _head() -> str:
    """The migration the code expects (the files do not change while the process runs)."""
    heads = ScriptDirectory.from_config(db.alembic_config(None)).get_heads()  # type: ignore[arg-type]
    return ",".join(sorted(heads))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
