"""The service as deployed: a real HTTP server process (gunicorn) and real worker processes.

A manifest goes from POST to answers over HTTP and matches what the CLI prints
for the same run; two workers racing over the same run leave exactly one copy
of every record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.conftest import REDIS_URL
from tests.harness import free_port, wait_healthy
from tests.pipelines import RunBuilder

CLIENTS = [{"client_id": i, "segment": f"s{i % 5}"} for i in range(1, 2001)]


@pytest.fixture
def service_env(database_url: str, engine: Engine, data_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACER_")}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        TRACER_QUEUE_PREFIX=f"tracer-proc-{uuid.uuid4().hex[:8]}",
        TRACER_DATA_ROOTS=str(data_root),
    )
    return env


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tracer", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def server(service_env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    process = _start(service_env, "serve", "--host", "127.0.0.1", "--port", str(port))
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        try:
            wait_healthy(f"{base}/health", process, timeout=15)
        except RuntimeError as exc:
            _stop(process)  # so that its stderr ends
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise AssertionError(f"server did not start: {exc}\n{stderr}") from None
        yield base
    finally:
        _stop(process)


def _http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _manifest(data_root: Path, engine: Engine, run_id: str) -> tuple[Path, dict[str, Any]]:
    trace = [{"client_id": i, "reason": "opt_out"} for i in range(1500, 1600)]
    path = RunBuilder(data_root, engine).manifest(
        stages=[{"name": "selection"}, {"name": "target"}],
        outputs={"selection": CLIENTS, "target": CLIENTS[:1400] + CLIENTS[:10]},
        trace={"t": ({"reported": False, "stage": "target", "reason_column": "reason"}, trace)},
        run_id=run_id,
    )
    body = json.loads(path.read_text())
    for part in ("outputs", "traceability"):
        body["run"][part] = {n: str(path.parent / p) for n, p in body["run"][part].items()}
    return path, body


def _cli_json(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "tracer", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_post_over_http_then_answers_match_the_cli(
    server: str, service_env: dict[str, str], data_root: Path, engine: Engine
) -> None:
    worker = _start(service_env, "worker")
    try:
        _, body = _manifest(data_root, engine, "proc-http")
        status, created = _http("POST", f"{server}/runs", body)
        assert status == 202, created
        for _ in range(300):
            detail = _http("GET", f"{server}/runs/proc-http")[1]
            if detail["status"] in ("classified", "failed"):
                break
            time.sleep(0.1)
        assert detail["status"] == "classified", (detail["error"], detail["datasets"])
        for job in created["job_ids"]["ingest"] + [created["job_ids"]["classify"]]:
            assert _http("GET", f"{server}/jobs/{job}")[1]["status"] == "finished"

        reconciliation = _http("GET", f"{server}/runs/proc-http/reconciliation")[1]
        assert reconciliation == _cli_json(service_env, "reconciliation", "proc-http")
        assert reconciliation["stages"][1]["outcomes"]["dropped_unreported"] == 100
        for client in (5, 1550, 1999):
            over_http = _http("GET", f"{server}/runs/proc-http/journeys/{client}")[1]
            assert over_http == _cli_json(service_env, "journey", "proc-http", str(client))
        page = _http("GET", f"{server}/runs/proc-http/anomalies?outcome=multiplied")[1]
        assert sorted(i["key"]["client_id"] for i in page["items"]) == list(range(1, 11))

        # The CLI queues through the same workers when REDIS_URL is set.
        path, _ = _manifest(data_root, engine, "proc-cli")
        queued = _cli_json(service_env, "ingest", str(path), "--wait")
        assert queued["totals"]["entered"] == 2000 and queued["run"]["status"] == "classified"
    finally:
        _stop(worker)


def test_two_workers_racing_on_one_run_leave_one_copy(
    service_env: dict[str, str], data_root: Path, engine: Engine
) -> None:
    """The same run submitted twice, plus a second job for every dataset (as a recovery
    sweep may leave behind), worked by two processes at once."""
    from tracer.config import Config
    from tracer.manifest import load_manifest
    from tracer.store import submit_run
    from workers import jobs
    from workers.queues import RQDispatcher

    path, _ = _manifest(data_root, engine, "proc-race")
    config = Config.from_env(service_env)
    dispatcher = RQDispatcher(config)
    manifest = load_manifest(path)
    batches = [dispatcher.submit(submit_run(engine, manifest)) for _ in range(2)]
    assert batches[0] == batches[1]  # one job per dataset: the second submission replaced it
    submitted = submit_run(engine, manifest)
    extra = [dispatcher.ingest_queue.enqueue(jobs.ingest, d).id for d in submitted.dataset_ids]
    workers = [_start(service_env, "worker", "--burst") for _ in range(2)]
    for worker in workers:
        assert worker.wait(timeout=120) == 0, worker.stderr.read() if worker.stderr else ""
    results = [dispatcher.status(job) for job in [*batches[0].ingest, *extra]]
    assert all(r and r["status"] == "finished" for r in results)
    # Each dataset was loaded once; its second job found the same fingerprint and skipped.
    loaded = sorted(r["result"]["dataset"] for r in results if r and not r["result"]["skipped"])
    assert loaded == ["selection", "t", "target"]
    with engine.connect() as conn:
        counts = conn.execute(
            text(
                """
SELECT d.name, count(c.seq), sum(octet_length(c.data)) > 0, max(d.key_count)
FROM datasets d JOIN runs r ON r.pk = d.run_pk LEFT JOIN dataset_chunks c ON c.dataset_id = d.id
WHERE r.run_id = 'proc-race' GROUP BY d.name ORDER BY d.name
"""
            )
        ).all()
        keys = conn.execute(
            text(
                "SELECT count(*), count(DISTINCT key) FROM key_outcomes k "
                "JOIN runs r ON r.pk = k.run_pk WHERE r.run_id = 'proc-race'"
            )
        ).one()
        status = conn.execute(text("SELECT status FROM runs WHERE run_id = 'proc-race'")).scalar()
    assert [tuple(c) for c in counts] == [
        ("selection", 1, True, 2000),
        ("t", 1, True, 100),
        ("target", 1, True, 1400),
    ]
    assert tuple(keys) == (2000, 2000) and status == "classified"
