"""What the views share: the configuration, one engine and one job dispatcher per app."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Connection, Engine

from tracer.config import Config
from tracer.partitions import lock_for_reading
from workers.queues import Dispatcher


@dataclass(frozen=True)
class State:
    config: Config
    engine: Engine
    dispatcher: Dispatcher


def state() -> State:
    return current_app.extensions["tracer"]


@contextmanager
def connection() -> Iterator[Connection]:
    with state().engine.connect() as conn:
        lock_for_reading(conn)
        yield conn
