"""Operations: a JSON log line per request and per job, Prometheus /metrics, a truthful /health.

Against real Postgres and Redis: jobs run through the test's own rq queues (SimpleWorker,
and a real `tracer worker` process), the multiprocess counters through a real gunicorn
with two workers, and the dependencies "down" are closed ports (the services keep running).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
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
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from tests.conftest import REDIS_URL
from tests.harness import free_port, tracer_serve
from tests.openapi_check import CheckedClient
from tests.pipelines import RunBuilder
from tracer import logs
from tracer.config import Config, parse_tokens

A_ROWS = [{"client_id": i} for i in range(1, 26)]
B_ROWS = [{"client_id": i} for i in range(1, 16)]
T_ROWS = [{"client_id": i, "reason": "excluded"} for i in range(16, 21)]
TRACE = {"reported": True, "stage": "b", "reason_column": "reason"}


def _body(data_root: Path, engine: Engine, run_id: str, bad_stage: bool = False) -> dict[str, Any]:
    """A two-stage run as a client posts it (25 clients, 15 targeted, 5 logged); with
    `bad_stage` the trace rows name a stage the pipeline does not have (its job fails)."""
    trace, rows = TRACE, T_ROWS
    if bad_stage:
        trace = {"reported": True, "stage_column": "stage", "reason_column": "reason"}
        rows = [dict(r, stage="nowhere") for r in T_ROWS]
    path = RunBuilder(data_root, engine).manifest(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": A_ROWS, "b": B_ROWS},
        trace={"t": (trace, rows)},
        run_id=run_id,
    )
    body = json.loads(path.read_text())
    for part in ("outputs", "traceability"):
        body["run"][part] = {n: str(path.parent / p) for n, p in body["run"][part].items()}
    return body


def _samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by prometheus_client: {(name, labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _json_lines(records: list[logging.LogRecord], logger: str) -> list[dict[str, Any]]:
    """The records of one logger as the JSON formatter writes them, parsed back."""
    formatter = logs.formatter("json")
    return [json.loads(formatter.format(r)) for r in records if r.name == logger]


# -- request log lines ---------------------------------------------------------------------


def test_one_json_line_per_request_with_route_run_token_and_request_id(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tracer.request")
    client = app.test_client()
    given = client.get("/api/v1/runs/no-such-run", headers={"X-Request-ID": "req-42.a"})
    assert given.status_code == 404 and given.headers["X-Request-ID"] == "req-42.a"
    forged = client.get("/api/v1/health", headers={"X-Request-ID": "two words\x07"})
    replaced = forged.headers["X-Request-ID"]
    assert replaced != "two words\x07" and len(replaced) == 32 and replaced.isalnum()
    too_long = client.get("/api/v1/health", headers={"X-Request-ID": "x" * 129})
    assert too_long.headers["X-Request-ID"] != "x" * 129
    client.get("/nowhere/at/all")

    lines = _json_lines(caplog.records, "tracer.request")
    assert len(lines) == 4
    first, second, _, unmatched = lines
    assert first["request_id"] == "req-42.a"
    assert first["method"] == "GET" and first["status"] == 404
    assert first["route"] == "/api/v1/runs/<run_id>" and first["path"] == "/api/v1/runs/no-such-run"
    assert first["run_id"] == "no-such-run"
    assert first["token"] == "anonymous (no tokens configured)"
    assert first["duration_ms"] > 0 and first["level"] == "INFO" and first["pid"] == os.getpid()
    assert "GET /api/v1/runs/no-such-run -> 404" in first["message"]
    assert second["request_id"] == replaced and second["run_id"] is None
    assert unmatched["route"] == "<unmatched>" and unmatched["status"] == 404


def test_request_lines_name_the_token_never_the_secret(
    app: Any, api_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    from api import create_app

    caplog.set_level(logging.INFO, logger="tracer")
    secured = create_app(
        dataclasses.replace(api_config, api_tokens=parse_tokens("read:ops-read:s3cret-r"))
    )
    client = secured.test_client()
    assert client.get("/api/v1/runs", headers={"Authorization": "Bearer s3cret-r"}).status_code
    assert client.get("/api/v1/runs").status_code == 401
    lines = _json_lines(caplog.records, "tracer.request")
    assert [(line["token"], line["status"]) for line in lines] == [
        ("ops-read", 200),
        ("unauthenticated", 401),
    ]
    assert "s3cret-r" not in caplog.text


def test_the_audit_line_keeps_its_words_and_gains_fields(
    app: Any, data_root: Path, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tracer.audit")
    client = CheckedClient(app)
    run_id = f"ops-audit-{uuid.uuid4().hex[:6]}"
    assert client.post("/api/v1/runs", json=_body(data_root, engine, run_id)).status_code == 202
    assert client.delete(f"/api/v1/runs/{run_id}").status_code == 204
    [line] = _json_lines(caplog.records, "tracer.audit")
    assert line["message"].startswith(
        f"token 'anonymous (no tokens configured)': DELETE /api/v1/runs/{run_id} -> 204 from "
    )
    assert (line["event"], line["path"], line["status"]) == (
        "delete",
        f"/api/v1/runs/{run_id}",
        204,
    )


# -- job log lines -------------------------------------------------------------------------


def test_one_json_line_per_job_with_rows_keys_and_outcome(
    app: Any, data_root: Path, engine: Engine, run_jobs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tracer.job")
    client = CheckedClient(app)
    run_id = f"ops-jobs-{uuid.uuid4().hex[:6]}"
    jobs = client.post("/api/v1/runs", json=_body(data_root, engine, run_id)).get_json()
    run_jobs()
    lines = _json_lines(caplog.records, "tracer.job")
    ingest = sorted((x for x in lines if x["kind"] == "ingest"), key=lambda x: x["dataset"])
    [classify] = [x for x in lines if x["kind"] == "classify"]
    assert {x["job_id"] for x in ingest} == set(jobs["job_ids"]["ingest"])
    assert classify["job_id"] == jobs["job_ids"]["classify"]
    assert {x["outcome"] for x in lines} == {"succeeded"} and {x["run_id"] for x in lines} == {
        run_id
    }
    with engine.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT d.name, d.row_count, d.key_count FROM datasets d JOIN runs r "
                "ON r.pk = d.run_pk WHERE r.run_id = :r ORDER BY d.name"
            ),
            {"r": run_id},
        ).all()
    assert [(x["dataset"], x["rows"], x["keys"]) for x in ingest] == [tuple(r) for r in stored]
    assert [x["rows"] for x in ingest] == [len(A_ROWS), len(B_ROWS), len(T_ROWS)]
    assert all(x["duration_ms"] > 0 for x in lines)
    assert "rows" not in classify and classify["dataset"] is None


def test_a_failed_job_logs_its_error(
    app: Any, data_root: Path, engine: Engine, run_jobs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tracer.job")
    client = CheckedClient(app)
    run_id = f"ops-fail-{uuid.uuid4().hex[:6]}"
    body = _body(data_root, engine, run_id, bad_stage=True)
    assert client.post("/api/v1/runs", json=body).status_code == 202
    run_jobs()
    [failed] = [x for x in _json_lines(caplog.records, "tracer.job") if x["outcome"] == "failed"]
    assert failed["level"] == "ERROR" and failed["kind"] == "ingest"
    assert failed["dataset"] == "t" and failed["run_id"] == run_id
    assert "'nowhere'" in failed["error"] and failed["will_retry"] is False
    detail = client.get(f"/api/v1/runs/{run_id}").get_json()
    assert detail["error"].endswith(failed["error"])


def _burst_worker(api_config: Config, data_root: Path) -> subprocess.CompletedProcess[str]:
    """`tracer worker --burst` on the test's queues, as deployed: a process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACER_")}
    env.update(
        DATABASE_URL=str(api_config.database_url),
        REDIS_URL=REDIS_URL,
        TRACER_QUEUE_PREFIX=api_config.queue_prefix,
        TRACER_DATA_ROOTS=str(data_root),
    )
    done = subprocess.run(
        [sys.executable, "-m", "tracer", "worker", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_real_worker_process_writes_json_job_lines(
    app: Any, api_config: Config, data_root: Path, engine: Engine, tmp_path: Path
) -> None:
    client = CheckedClient(app)
    run_id = f"ops-worker-{uuid.uuid4().hex[:6]}"
    jobs = client.post("/api/v1/runs", json=_body(data_root, engine, run_id)).get_json()
    done = _burst_worker(api_config, data_root)
    lines = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
    assert lines, done.stderr
    job_lines = [x for x in lines if x["logger"] == "tracer.job"]
    assert sorted(x["job_id"] for x in job_lines) == sorted(
        [*jobs["job_ids"]["ingest"], jobs["job_ids"]["classify"]]
    )
    assert all(x["outcome"] == "succeeded" and x["run_id"] == run_id for x in job_lines)
    assert sum(x.get("rows", 0) for x in job_lines) == len(A_ROWS + B_ROWS + T_ROWS)
    assert any(x["logger"].startswith("rq.") for x in lines)  # rq's own lines are JSON too
    assert client.get(f"/api/v1/runs/{run_id}").get_json()["status"] == "classified"


def test_a_real_worker_logs_bad_data_without_a_traceback(
    app: Any, api_config: Config, data_root: Path, engine: Engine
) -> None:
    """A job failed by bad data is an outcome the job's line explains, not a crash."""
    client = CheckedClient(app)
    run_id = f"ops-bad-{uuid.uuid4().hex[:6]}"
    body = _body(data_root, engine, run_id, bad_stage=True)
    assert client.post("/api/v1/runs", json=body).status_code == 202
    done = _burst_worker(api_config, data_root)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
    [failed] = [x for x in lines if x["logger"] == "tracer.job" and x["outcome"] == "failed"]
    assert "'nowhere'" in failed["error"]
    said = [x for x in lines if x["logger"].startswith("rq.") and "failed: " in x["message"]]
    assert said and "'nowhere'" in said[0]["message"] and "exc_info" not in said[0]
    assert client.get(f"/api/v1/runs/{run_id}").get_json()["status"] == "failed"


# -- /metrics --------------------------------------------------------------------------------


def test_metrics_count_requests_jobs_and_what_postgres_stores(
    app: Any, data_root: Path, engine: Engine, run_jobs: Any
) -> None:
    client = app.test_client()
    before = _samples(client.get("/metrics").get_data(as_text=True))
    for _ in range(3):
        assert client.get("/api/v1/jobs/no-such-job").status_code == 404
    run_id = f"ops-metrics-{uuid.uuid4().hex[:6]}"
    posted = client.post("/api/v1/runs", json=_body(data_root, engine, run_id))
    assert posted.status_code == 202
    queued = _samples(client.get("/metrics").get_data(as_text=True))
    run_jobs()
    scrape = client.get("/metrics")
    assert scrape.status_code == 200 and scrape.mimetype == "text/plain"
    after = _samples(scrape.get_data(as_text=True))

    route = "/api/v1/jobs/<job_id>"
    assert _value(
        before, "tracer_http_requests_total", method="GET", route=route, status="404"
    ) in (
        None,
        0.0,
    )
    assert _value(after, "tracer_http_requests_total", method="GET", route=route, status="404") == 3
    assert (
        _value(after, "tracer_http_request_duration_seconds_count", method="GET", route=route) == 3
    )
    assert (
        _value(
            after, "tracer_http_requests_total", method="POST", route="/api/v1/runs", status="202"
        )
        == 1
    )

    ingest_q, classify_q = (f"{app.extensions['tracer'].config.queue_prefix}:{k}" for k in (
        "ingest", "classify"))  # fmt: skip
    assert _value(queued, "tracer_jobs", queue=ingest_q, state="queued") == 3
    assert _value(queued, "tracer_jobs", queue=classify_q, state="deferred") == 1
    assert _value(after, "tracer_jobs", queue=ingest_q, state="queued") == 0
    assert _value(after, "tracer_jobs", queue=ingest_q, state="finished") == 3
    assert _value(after, "tracer_jobs", queue=classify_q, state="finished") == 1
    assert _value(after, "tracer_up", dependency="postgres") == 1
    assert _value(after, "tracer_up", dependency="redis") == 1

    with engine.connect() as conn:
        rows, keys = conn.execute(
            text(
                "SELECT sum(row_count), sum(key_count) FROM datasets d JOIN runs r "
                "ON r.pk = d.run_pk WHERE r.run_id = :r"
            ),
            {"r": run_id},
        ).one()
        classified = conn.execute(text("SELECT count(*) FROM runs WHERE status = 'classified'"))
        classified_runs = classified.scalar()
    assert rows == len(A_ROWS + B_ROWS + T_ROWS)
    grew = _value(after, "tracer_rows_ingested") - _value(queued, "tracer_rows_ingested")
    assert grew == rows
    assert _value(after, "tracer_keys_ingested") - _value(queued, "tracer_keys_ingested") == keys
    assert _value(after, "tracer_runs", status="classified") == classified_runs
    seconds = _value(after, "tracer_last_classification_seconds")
    assert seconds is not None and 0 < seconds < 60
    ended = _value(after, "tracer_last_classification_end_timestamp_seconds")
    assert ended is not None and abs(time.time() - ended) < 120


def test_metrics_are_open_with_an_open_api_and_need_read_with_tokens(
    app: Any, api_config: Config
) -> None:
    from api import create_app

    assert app.test_client().get("/metrics").status_code == 200
    secured = create_app(
        dataclasses.replace(api_config, api_tokens=parse_tokens("read:r-ops,ingest:i-ops"))
    ).test_client()
    refused = secured.get("/metrics")
    assert refused.status_code == 401 and refused.get_json()["ok"] is False
    assert secured.get("/metrics", headers={"Authorization": "Bearer r-ops"}).status_code == 200
    assert secured.post("/metrics", headers={"Authorization": "Bearer i-ops"}).status_code == 405
    spec = secured.get("/api/v1/openapi.json").get_json()
    assert not any("metrics" in path for path in spec["paths"])


def test_metrics_without_redis_report_the_in_process_jobs(
    database_url: str,
    data_root: Path,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from api import create_app
    from workers import jobs

    caplog.set_level(logging.INFO, logger="tracer.job")
    monkeypatch.setenv("DATABASE_URL", database_url)
    jobs.engine.cache_clear()
    app = create_app(Config(database_url=database_url, data_roots=(data_root,)))
    client = app.test_client()
    run_id = f"ops-inproc-{uuid.uuid4().hex[:6]}"
    posted = client.post("/api/v1/runs", json=_body(data_root, engine, run_id))
    assert posted.status_code == 202
    ids = posted.get_json()["job_ids"]
    deadline = time.monotonic() + 30
    while True:  # the jobs run on the app's own thread: until all four have finished
        samples = _samples(client.get("/metrics").get_data(as_text=True))
        finished = _value(samples, "tracer_jobs", queue="in-process", state="finished")
        if finished == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert finished == 4
    assert client.get(f"/api/v1/runs/{run_id}").get_json()["status"] == "classified"
    assert _value(samples, "tracer_last_classification_seconds") > 0
    assert _value(samples, "tracer_workers", queue="in-process") == 1
    assert _value(samples, "tracer_up", dependency="postgres") == 1
    assert _value(samples, "tracer_up", dependency="redis") is None  # there is no Redis
    health = client.get("/api/v1/health").get_json()
    assert health["redis"] == {
        "ok": True,
        "configured": False,
        "latency_ms": None,
        "error": "not configured (in-process jobs)",
    }
    assert health["queue"] == {"backlog": 0, "started": 0, "failed": 0, "workers": 1}
    logged = [x["job_id"] for x in _json_lines(caplog.records, "tracer.job")]
    assert sorted(logged) == sorted([*ids["ingest"], ids["classify"]])  # GET /jobs/{id} ids
    jobs.engine.cache_clear()


# -- /health ---------------------------------------------------------------------------------


def test_health_reports_postgres_redis_and_the_backlog(
    app: Any, data_root: Path, engine: Engine, run_jobs: Any
) -> None:
    client = CheckedClient(app)
    idle = client.get("/api/v1/health")
    assert idle.status_code == 200
    report = idle.get_json()
    assert report["ok"] is True and report["problems"] == []
    assert report["postgres"]["ok"] and report["postgres"]["schema_current"] is True
    assert report["postgres"]["revision"] == report["postgres"]["head"]
    assert report["postgres"]["latency_ms"] > 0
    assert report["redis"]["ok"] and report["redis"]["configured"] is True
    assert report["queue"] == {"backlog": 0, "started": 0, "failed": 0, "workers": 0}

    run_id = f"ops-health-{uuid.uuid4().hex[:6]}"
    jobs = client.post("/api/v1/runs", json=_body(data_root, engine, run_id)).get_json()
    waiting = client.get("/api/v1/health").get_json()["queue"]
    assert waiting["backlog"] == len(jobs["job_ids"]["ingest"]) == 3
    run_jobs()
    assert client.get("/api/v1/health").get_json()["queue"]["backlog"] == 0


def _health_with(api_config: Config, **changes: str) -> tuple[Any, dict[str, Any]]:
    """An app configured with `changes` (a dependency down), and its /health report: a 503
    within 3 s."""
    from api import create_app

    down = create_app(dataclasses.replace(api_config, **changes))
    started = time.monotonic()
    answer = CheckedClient(down).get("/api/v1/health")
    assert time.monotonic() - started < 3
    assert answer.status_code == 503
    return down, answer.get_json()


def test_health_is_503_naming_redis_when_redis_is_down(app: Any, api_config: Config) -> None:
    down, report = _health_with(api_config, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert report["ok"] is False and report["postgres"]["ok"] is True
    assert report["redis"]["ok"] is False and report["redis"]["error"]
    assert report["queue"] is None
    assert [p.split(":")[0] for p in report["problems"]] == ["redis"]
    samples = _samples(down.test_client().get("/metrics").get_data(as_text=True))
    assert _value(samples, "tracer_up", dependency="redis") == 0
    assert _value(samples, "tracer_up", dependency="postgres") == 1


def test_health_is_503_naming_postgres_when_postgres_is_down(app: Any, api_config: Config) -> None:
    closed = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    down, report = _health_with(api_config, database_url=closed)
    assert report["ok"] is False and report["redis"]["ok"] is True
    assert report["postgres"]["ok"] is False and report["postgres"]["latency_ms"] is None
    assert [p.split(":")[0] for p in report["problems"]] == ["postgres"]
    assert "refused" in report["postgres"]["error"].lower()
    scrape = down.test_client().get("/metrics")
    assert scrape.status_code == 200
    samples = _samples(scrape.get_data(as_text=True))
    assert _value(samples, "tracer_up", dependency="postgres") == 0
    assert _value(samples, "tracer_rows_ingested") is None  # absent, not a false zero


def test_health_answers_fast_when_a_dependency_accepts_but_never_answers(
    app: Any, api_config: Config
) -> None:
    """A port that accepts connections and then says nothing (a hung server, a black hole):
    /health and /metrics give up on it after their timeouts instead of hanging."""
    from api import create_app

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # never accepted: connections complete, nothing is ever answered
        port = silent.getsockname()[1]
        hung = create_app(
            dataclasses.replace(
                api_config,
                database_url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/x",
                redis_url=f"redis://127.0.0.1:{port}/0",
            )
        )
        client = CheckedClient(hung)
        started = time.monotonic()
        answer = client.get("/api/v1/health")
        assert time.monotonic() - started < 3
        assert answer.status_code == 503
        assert [p.split(":")[0] for p in answer.get_json()["problems"]] == ["postgres", "redis"]
        started = time.monotonic()
        samples = _samples(hung.test_client().get("/metrics").get_data(as_text=True))
        assert time.monotonic() - started < 3
        assert _value(samples, "tracer_up", dependency="postgres") == 0
        assert _value(samples, "tracer_up", dependency="redis") == 0


# -- under gunicorn ----------------------------------------------------------------------------


@pytest.fixture
def gunicorn(database_url: str, engine: Engine, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`tracer serve --workers 2` (gunicorn), its stderr in a file, its TMPDIR of its own."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACER_", "PROMETHEUS_"))}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        TRACER_QUEUE_PREFIX=f"tracer-ops-{uuid.uuid4().hex[:8]}",
        TMPDIR=str(tmp),
    )
    err = tmp_path / "stderr"
    with tracer_serve(env, err, "--workers", "2", timeout=20) as (process, port):
        yield {"base": f"http://127.0.0.1:{port}", "stderr": err, "tmp": tmp, "process": process}


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


def _request_lines(stderr: Path) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in stderr.read_text().splitlines() if x.startswith("{")]
    return [x for x in lines if x["logger"] == "tracer.request"]


def test_gunicorn_workers_sum_their_counts_and_log_json(gunicorn: dict[str, Any]) -> None:
    base, stderr = gunicorn["base"], gunicorn["stderr"]
    made = list(gunicorn["tmp"].glob("tracer-metrics-*"))
    assert len(made) == 1 and list(made[0].glob("*.db"))  # the workers' counter files

    sent = 0
    route = "/api/v1/jobs/<job_id>"
    while sent < 400:
        status, _, headers = _get(f"{base}/api/v1/jobs/none-{sent}", {"X-Request-ID": f"r{sent}"})
        assert status == 404 and headers["X-Request-ID"] == f"r{sent}"
        sent += 1
        pids = {x["pid"] for x in _request_lines(stderr) if x["route"] == route}
        if sent >= 20 and len(pids) >= 2:
            break
    assert len(pids) == 2, "gunicorn never spread the requests over both workers"

    for _ in range(4):  # whichever worker answers the scrape, it counts both
        status, body, _ = _get(f"{base}/metrics")
        assert status == 200
        samples = _samples(body.decode())
        counted = _value(samples, "tracer_http_requests_total", method="GET", route=route,
                         status="404")  # fmt: skip
        assert counted == sent

    lines = [x for x in _request_lines(stderr) if x["route"] == route]
    assert sorted(x["request_id"] for x in lines) == sorted(f"r{i}" for i in range(sent))
    assert all(x["status"] == 404 and x["method"] == "GET" for x in lines)
    text_lines = stderr.read_text().splitlines()
    assert not any("GET /api/v1/jobs" in x for x in text_lines if not x.startswith("{")), (
        "gunicorn's plain access log should be off: the JSON line replaces it"
    )
    assert any('"logger": "gunicorn.error"' in x for x in text_lines)

    gunicorn["process"].terminate()
    gunicorn["process"].wait(timeout=20)
    assert not list(gunicorn["tmp"].glob("tracer-metrics-*"))  # removed at exit
