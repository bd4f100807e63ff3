"""A lost database connection is retried with back-off; it does not fail the run.

The fault is injected into the job's first call (the connection "drops"); the
queue, the retry schedule, the worker and the database are all real.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy.exc import OperationalError

from tests.openapi_check import CheckedClient
from tests.pipelines import RunBuilder
from workers import jobs
from workers.queues import queue_names


def test_a_transient_database_error_is_retried_then_succeeds(
    app: Any, api_config: Any, data_root: Path, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_step = jobs.ingest_step
    calls = []

    def flaky(engine_: Any, dataset_id: int) -> Any:
        calls.append(dataset_id)
        if len(calls) == 1:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return real_step(engine_, dataset_id)

    monkeypatch.setattr(jobs, "ingest_step", flaky)
    path = RunBuilder(data_root, engine).manifest(
        [{"name": "a"}], {"a": [{"client_id": 1}, {"client_id": 2}]}, run_id="flaky"
    )
    body = json.loads(path.read_text())
    body["run"]["outputs"] = {"a": str(path.parent / "a.parquet")}
    client = CheckedClient(app)
    job_ids = client.post("/api/v1/runs", json=body).get_json()["job_ids"]
    connection = Redis.from_url(api_config.redis_url)
    queues = [Queue(name, connection=connection) for name in queue_names(api_config)]

    SimpleWorker(queues, connection=connection).work(burst=True)
    ingest = client.get(f"/api/v1/jobs/{job_ids['ingest'][0]}").get_json()
    assert ingest["status"] == "scheduled"  # retried later, not failed
    assert client.get("/api/v1/runs/flaky").get_json()["status"] == "queued"

    time.sleep(2.5)  # the first back-off step is 2 s
    SimpleWorker(queues, connection=connection).work(burst=True, with_scheduler=True)
    assert len(calls) == 2
    assert client.get(f"/api/v1/jobs/{job_ids['ingest'][0]}").get_json()["status"] == "finished"
    for _ in range(20):  # the classify job was released by the retried ingest
        if client.get("/api/v1/runs/flaky").get_json()["status"] == "classified":
            break
        SimpleWorker(queues, connection=connection).work(burst=True)
    assert client.get("/api/v1/runs/flaky/journeys/2").get_json()["final_outcome"] == "targeted"
    for queue in queues:
        queue.empty()
