"""One API over real data, for the tests that read the whole OpenAPI document against it
(tests/test_openapi_exact.py, tests/test_fuzz.py).

A database of its own (what fuzzing posts never reaches another test's lists) holds two
classified runs of one pipeline, the second a rerun of the first; the app reads tokens with
the `read` and the `ingest` scope (no `admin`: nothing can be deleted), and its only data
root is an empty folder, so a generated manifest names no file the server may read and is
refused before anything is queued.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from tests.conftest import REDIS_URL, throwaway_database
from tests.pipelines import RunBuilder
from tracer import db
from tracer.config import Config, parse_tokens
from tracer.manifest import load_manifest
from tracer.store import ingest_manifest

TOKENS = {"read": "fuzz-read-secret", "ingest": "fuzz-ingest-secret"}
TRACE = {"reported": True, "stage": "b", "reason_column": "reason"}


@dataclass(frozen=True)
class World:
    app: Any
    run_a: str
    run_b: str
    pipeline: str
    config: Config

    def headers(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS[scope]}"}


def _rerun(path: Path, run_id: str, of: str) -> Path:
    """The same manifest as another run of the same pipeline, a rerun of `of`."""
    data = json.loads(path.read_text())
    data["run"].update(id=run_id, rerun_of=of)
    rerun = path.with_name(f"{run_id}.json")
    rerun.write_text(json.dumps(data))
    return rerun


@contextmanager
def api_world(root: Path) -> Iterator[World]:
    """The world for as long as the block lasts; its database and queues go afterwards."""
    from redis import Redis
    from rq import Queue

    from api import create_app
    from workers.queues import queue_names

    with throwaway_database("tracer_api_world") as url:
        engine = create_engine(url)
        try:
            db.upgrade(engine)
            build = RunBuilder(root / "runs", engine)
            first = build.manifest(
                stages=[{"name": "a"}, {"name": "b"}],
                outputs={
                    "a": [{"client_id": i} for i in range(1, 26)],
                    "b": [{"client_id": i} for i in [*range(1, 16), 3]],
                },
                trace={
                    "t": (TRACE, [{"client_id": i, "reason": "excluded"} for i in range(16, 21)])
                },
                run_id="world-a",
            )
            run_a = ingest_manifest(engine, load_manifest(first))
            run_b = ingest_manifest(engine, load_manifest(_rerun(first, "world-b", run_a)))
            empty = root / "empty"
            empty.mkdir()
            config = Config(
                database_url=url,
                redis_url=REDIS_URL,
                data_roots=(empty,),
                queue_prefix=f"tracer-world-{uuid.uuid4().hex[:8]}",
                api_tokens=parse_tokens(",".join(f"{s}:world-{s}:{t}" for s, t in TOKENS.items())),
            )
            app = create_app(config)
            try:
                yield World(app, run_a, run_b, "p-world-a", config)
            finally:
                app.extensions["tracer"].engine.dispose()
                connection = Redis.from_url(REDIS_URL)
                for name in queue_names(config):
                    Queue(name, connection=connection).delete(delete_jobs=True)
        finally:
            engine.dispose()
