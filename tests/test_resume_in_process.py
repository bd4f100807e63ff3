"""Without Redis the jobs live in the serving process: a restart takes up what it left queued."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.pipelines import RunBuilder
from tracer.config import Config
from tracer.manifest import load_manifest
from tracer.store import submit_run


def test_a_restarted_server_finishes_the_runs_it_left_queued(
    database_url: str, data_root: Path, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api import create_app
    from workers import jobs

    monkeypatch.setenv("DATABASE_URL", database_url)
    jobs.engine.cache_clear()
    path = RunBuilder(data_root, engine).manifest(
        [{"name": "a"}, {"name": "b"}],
        {"a": [{"client_id": i} for i in (1, 2, 3)], "b": [{"client_id": 1}]},
        run_id="left-queued",
    )
    submit_run(engine, load_manifest(path))  # registered, then the process "died"
    client = create_app(Config(database_url=database_url, data_roots=(data_root,))).test_client()
    for _ in range(100):
        detail = client.get("/api/v1/runs/left-queued").get_json()
        if detail["status"] != "queued":
            break
        time.sleep(0.1)
    assert detail["status"] == "classified", detail
    journey = client.get("/api/v1/runs/left-queued/journeys/2").get_json()
    assert journey["final_outcome"] == "orphaned"
    jobs.engine.cache_clear()
