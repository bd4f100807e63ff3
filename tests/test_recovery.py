"""What the API promises while runs are being recovered or re-ingested.

* Reads during a re-ingest, changed or failing, are answered from the last published
  classification; `status` tells the latest attempt, `classified_at` the published one;
  a read overlapping the publication of the next sees one of the two, whole
  (docs/semantics.md#publishing).
* A token that may ingest deletes nothing, however it asks.
* Bad input (a NUL inside a string key) fails its job at once, says where, and cancels the
  classification; `tracer resume` finds what no job carries any more and queues it again.

Workers here are rq's SimpleWorker in this process (tests/conftest.py `run_jobs`); the
process-killing cases are tests/test_chaos.py's.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from click.testing import CliRunner
from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy import Engine, text

from bench.chaos import _read_paths, _strip, break_key, campaign, manifest_body
from tests.openapi_check import CheckedClient
from tests.pipelines import RunBuilder
from tracer.config import parse_tokens
from tracer.manifest import load_manifest
from tracer.store import submit_run
from workers.queues import queue_names

READS = 2000
"""Reads during each re-ingest: the changed one and the failing one."""


class Reads(threading.Thread):
    """Reads the run's answers in a loop until stopped; keeps what each one said."""

    def __init__(self, app: Any, run_id: str, keys: list[int]) -> None:
        super().__init__(daemon=True)
        self.client = app.test_client()
        self.run_id = run_id
        self.paths = [*_read_paths(run_id, keys), f"/api/v1/runs/{run_id}"]
        self.seen: list[tuple[str, int, Any]] = []  # (path, status code, body)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            path = self.paths[len(self.seen) % len(self.paths)]
            response = self.client.get(path)
            self.seen.append((path, response.status_code, response.get_json()))

    def until(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def finish(self) -> list[tuple[str, int, Any]]:
        self.until(READS)
        self.stop.set()
        self.join(timeout=30)
        return self.seen


def answers(client: Any, run_id: str, keys: list[int]) -> dict[str, Any]:
    """The run's answers now, by path, without what names the run."""
    out = {}
    for path in _read_paths(run_id, keys):
        response = client.get(path)
        assert response.status_code == 200, (path, response.get_json())
        out[path] = _strip(response.get_json(), run_id)
    return out


def test_reads_during_a_changed_reingest_and_a_failing_one(
    app: Any, api_config: Any, data_root: Path, engine: Engine, run_jobs: Any
) -> None:
    """2,000 reads during each re-ingest, spread over every state it passes through: posted,
    after each dataset's load (its chunks replaced), during the classification."""
    run_id = "read-through"
    a, b = campaign(data_root, 5000, 7), campaign(data_root, 5000, 8)
    broken = break_key(a, "trace_buffer", "12x")  # A's content, and a key that is no integer
    client = CheckedClient(app)  # these answers are also checked against the OpenAPI document
    assert client.post("/api/v1/runs", json=manifest_body(a, run_id)).status_code == 202
    run_jobs()
    first = client.get(f"/api/v1/runs/{run_id}").get_json()
    assert first["status"] == "classified"
    with engine.connect() as conn:  # entering clients of each final outcome: in both contents
        keys = (
            conn.execute(
                text(
                    "SELECT DISTINCT ON (k.final) k.key FROM key_outcomes k "
                    "JOIN runs r ON r.pk = k.run_pk WHERE r.run_id = :r AND k.entered "
                    "ORDER BY k.final, k.key"
                ),
                {"r": run_id},
            )
            .scalars()
            .all()
        )
    published_a = answers(client, run_id, keys)
    worker = one_job_at_a_time(api_config)

    # 1. A changed re-ingest (every dataset differs): reads between and during its jobs.
    assert client.post("/api/v1/runs", json=manifest_body(b, run_id)).status_code == 202
    reads = Reads(app, run_id, keys)
    reads.start()
    for step in range(10):  # nine loads, then the classification
        reads.until((step + 1) * READS // 10)
        if step == 9:
            classifying = len(reads.seen)
        assert worker.work(burst=True, max_jobs=1)
    published = len(reads.seen)
    seen = reads.finish()
    second = client.get(f"/api/v1/runs/{run_id}").get_json()
    assert second["status"] == "classified" and second["classified_at"] > first["classified_at"]
    published_b = answers(client, run_id, keys)
    assert published_b != published_a
    refused = [(path, code, body) for path, code, body in seen if code != 200]
    assert not refused, refused[:3]
    # Until the classification started, every answer was the published one, run `queued`.
    for path, _, body in seen[:classifying]:
        run = body if path.endswith(run_id) else body["run"]
        assert (run["status"], run["classified_at"]) == ("queued", first["classified_at"])
        if not path.endswith(run_id):
            assert _strip(body, run_id) == published_a[path], path
    # While it ran and once it was done: the one published or the other, nothing else.
    kinds = _kinds(seen[classifying:], run_id, published_a, published_b, first, second)
    print(
        f"\nchanged re-ingest: {published} reads until the new classification was published "
        f"({published - classifying} while it ran), then {len(seen) - published}; "
        f"during and after it: {kinds}"
    )
    assert published >= READS and kinds.get("wrong", 0) == 0, kinds
    # A read overlapping the publication must see one classification whole, not the run's
    # row as it was before the swap committed and its keys as they are after (each statement
    # its own snapshot). That takes readers locking the three partitioned tables first, in
    # the one order the swap takes them all at once; in other orders they also deadlock (500).
    assert kinds.get("torn", 0) == 0, f"{kinds}: answers under the other's classified_at"

    # 2. A failing re-ingest: eight datasets load (content A again), then trace_buffer fails.
    # Reads all along answer the published classification (B's), through to `failed`.
    assert client.post("/api/v1/runs", json=manifest_body(broken, run_id)).status_code == 202
    reads = Reads(app, run_id, keys)
    reads.start()
    for step in range(9):  # the classification is cancelled when trace_buffer fails
        reads.until((step + 1) * READS // 10)
        assert worker.work(burst=True, max_jobs=1)
    seen = reads.finish()
    failed = client.get(f"/api/v1/runs/{run_id}").get_json()
    assert failed["status"] == "failed"
    assert failed["classified_at"] == second["classified_at"]  # still published
    assert "trace_buffer" in failed["error"] and "'client_id'" in failed["error"]
    assert "'12x'" in failed["error"] and str(broken) in failed["error"]
    loaded = {d["name"]: d["status"] for d in failed["datasets"]}
    assert loaded.pop("trace_buffer") == "failed" and set(loaded.values()) == {"ingested"}
    statuses = set()
    for path, code, body in seen:
        assert code == 200, (path, body)
        run = body if path.endswith(run_id) else body["run"]
        statuses.add(run["status"])
        assert run["classified_at"] == second["classified_at"], path
        if not path.endswith(run_id):
            assert _strip(body, run_id) == published_b[path], path
    print(f"failing re-ingest: {len(seen)} reads, statuses seen {sorted(statuses)}")
    assert statuses == {"queued", "failed"} and len(seen) >= READS
    assert answers(client, run_id, keys) == published_b


def one_job_at_a_time(api_config: Any) -> Any:
    """rq's SimpleWorker on the test's queues (in this process), to step through a run."""
    from rq import SimpleWorker

    connection = Redis.from_url(api_config.redis_url)
    queues = [Queue(name, connection=connection) for name in queue_names(api_config)]
    return SimpleWorker(queues, connection=connection)


def _kinds(
    seen: list[tuple[str, int, Any]],
    run_id: str,
    old: dict[str, Any],
    new: dict[str, Any],
    first: dict[str, Any],
    second: dict[str, Any],
) -> dict[str, int]:
    """Each answer: `old` (the published one, under its classified_at), `new` (likewise),
    `torn` (one classification's answer under the other's classified_at: a read that
    overlapped the publication), or `wrong` (neither)."""
    kinds: dict[str, int] = {}
    for path, _, body in seen:
        if path.endswith(run_id):
            continue
        answer, at = _strip(body, run_id), body["run"]["classified_at"]
        is_old, is_new = answer == old[path], answer == new[path]
        if (is_old and at == first["classified_at"]) or (is_new and at == second["classified_at"]):
            kind = "old" if is_old and at == first["classified_at"] else "new"
        elif is_old or is_new:
            kind = "torn"
        else:
            kind = "wrong"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def test_an_ingest_token_fuzzing_every_delete_deletes_nothing(
    api_config: Any, data_root: Path, engine: Engine
) -> None:
    """The issue's scenario: a fuzzer holding the CI's ingest token walks GET /runs and tries
    every DELETE the API documents, on every run and pipeline it finds, in several spellings.
    Nothing may go: every run answers afterwards exactly as before."""
    from api import create_app

    tokens = parse_tokens("ingest:ci-fuzzer:fuzz-secret,admin:ops:ops-secret")
    app = create_app(dataclasses.replace(api_config, api_tokens=tokens))
    fuzzer, ops = CheckedClient(app, token="fuzz-secret"), CheckedClient(app, token="ops-secret")
    build = RunBuilder(data_root, engine)
    ours = [
        build.run(
            [{"name": "a"}, {"name": "b"}],
            {"a": [{"client_id": i} for i in range(n)], "b": [{"client_id": 1}]},
            run_id=f"fuzz-{n}",
        )
        for n in (3, 4, 5)
    ]
    before = {run: ops.get(f"/api/v1/runs/{run}/reconciliation").get_json() for run in ours}
    with engine.connect() as conn:
        rows_before = conn.execute(text("SELECT count(*) FROM key_outcomes")).scalar()

    runs, pipelines, url = [], set(), "/api/v1/runs?limit=2"
    while url:
        page = fuzzer.get(url).get_json()
        runs += [r["run_id"] for r in page["items"]]
        pipelines |= {r["pipeline"] for r in page["items"]}
        url = page["next_url"] and page["next_url"].removeprefix("http://localhost")
    assert set(ours) <= set(runs)
    spec = fuzzer.client.get("/api/v1/openapi.json").get_json()
    deletes = [path for path, operations in spec["paths"].items() if "delete" in operations]
    assert "/api/v1/runs/{run_id}" in deletes

    answered = []
    for template in deletes:
        names = runs if "{run_id}" in template else sorted(pipelines)
        for name in names:
            path, encoded = (
                template.replace("{run_id}", n).replace("{name}", n)
                for n in (name, quote(name, safe="").replace("-", "%2D"))
            )
            assert "{" not in path, template
            for method, url, headers in (
                ("DELETE", path, {}),
                ("DELETE", encoded, {}),
                ("DELETE", path + "/", {}),
                ("DELETE", path.replace("/api/v1/", "/api/v1//"), {}),
                ("DELETE", path + "?force=true", {}),
                ("POST", path, {"X-HTTP-Method-Override": "DELETE"}),
                ("GET", path, {"X-HTTP-Method": "DELETE", "X-Method-Override": "DELETE"}),
            ):
                response = fuzzer.client.open(
                    url, method=method, headers={"Authorization": "Bearer fuzz-secret", **headers}
                )
                answered.append((method, url, response.status_code))
                if method != "GET":  # a GET reads, whatever its headers say
                    assert response.status_code not in (200, 202, 204), (method, url, headers)
    canonical = [code for method, url, code in answered if method == "DELETE" and "//" not in url]
    assert canonical and 403 in canonical
    assert {c for m, u, c in answered if m == "DELETE" and u.startswith("/api/v1/runs/fuzz-")} <= {
        403,
        404,
        405,
        308,
    }
    for run in ours:
        assert fuzzer.delete(f"/api/v1/runs/{run}").status_code == 403
        assert ops.get(f"/api/v1/runs/{run}/reconciliation").get_json() == before[run]
    for run in runs:
        assert fuzzer.get(f"/api/v1/runs/{run}").status_code == 200
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM key_outcomes")).scalar() >= rows_before
        left = conn.execute(
            text("SELECT count(*) FROM runs WHERE run_id = ANY(:r)"), {"r": runs}
        ).scalar()
    assert left == len(runs)
    print(f"\n{len(answered)} fuzzed requests, none deleted anything")


def test_a_nul_in_a_string_key_fails_the_job_at_once(
    app: Any, api_config: Any, data_root: Path, engine: Engine, run_jobs: Any
) -> None:
    path = RunBuilder(data_root, engine).manifest(
        [{"name": "a"}, {"name": "b"}],
        {"a": [{"client_id": "c-1"}, {"client_id": "c\x00-2"}], "b": [{"client_id": "c-1"}]},
        run_id="nul-key",
    )
    body = json.loads(path.read_text())
    body["run"]["outputs"] = {n: str(path.parent / p) for n, p in body["run"]["outputs"].items()}
    client = CheckedClient(app)
    created = client.post("/api/v1/runs", json=body)
    assert created.status_code == 202, created.get_json()  # the manifest itself is valid
    job_ids = created.get_json()["job_ids"]
    started = time.monotonic()
    run_jobs()
    assert time.monotonic() - started < 10  # no back-off: it failed at once
    statuses = [client.get(f"/api/v1/jobs/{j}").get_json() for j in job_ids["ingest"]]
    failed = [s for s in statuses if s["status"] == "failed"]
    assert [s["status"] for s in statuses].count("finished") == 1 and len(failed) == 1
    message = failed[0]["error"]
    where = str(path.parent / "a.parquet")
    assert where in message and "'client_id'" in message and "'c\\x00-2'" in message, message
    assert "NUL" in message
    connection = Redis.from_url(api_config.redis_url)
    job = Job.fetch(failed[0]["id"], connection=connection)
    assert job.retries_left == 0  # not retried: the same input fails the same way
    ingest_queue = Queue(queue_names(api_config)[0], connection=connection)
    assert failed[0]["id"] not in ingest_queue.scheduled_job_registry.get_job_ids()
    assert client.get(f"/api/v1/jobs/{job_ids['classify']}").get_json()["status"] == "canceled"
    run = client.get("/api/v1/runs/nul-key").get_json()
    assert run["status"] == "failed" and message.endswith(run["error"]), (run, message)
    assert {d["name"]: d["status"] for d in run["datasets"]} == {"a": "failed", "b": "ingested"}


def test_resume_finds_a_run_whose_jobs_are_gone_and_queues_it_again(
    api_config: Any, data_root: Path, engine: Engine, run_jobs: Any, app: Any
) -> None:
    """Postgres has the run queued, Redis has none of its jobs (lost with a restart):
    `tracer resume --dry-run` says so and changes nothing; `tracer resume` queues it again."""
    from workers.cli import resume

    path = RunBuilder(data_root, engine).manifest(
        [{"name": "a"}], {"a": [{"client_id": 1}, {"client_id": 2}]}, run_id="resumed"
    )
    submitted = submit_run(engine, load_manifest(path))  # registered; no job queued
    env = {
        "DATABASE_URL": api_config.database_url,
        "REDIS_URL": api_config.redis_url,
        "TRACER_QUEUE_PREFIX": api_config.queue_prefix,
    }
    connection = Redis.from_url(api_config.redis_url)
    queues = [Queue(name, connection=connection) for name in queue_names(api_config)]
    runner = CliRunner()

    dry = runner.invoke(resume, ["resumed", "--dry-run", "--json"], env=env)
    assert dry.exit_code == 0, dry.output
    found = json.loads(dry.output)
    assert [s["run_id"] for s in found] == ["resumed"] and found[0]["requeued"] == []
    assert len(found[0]["problems"]) == len(submitted.dataset_ids) + 1
    assert all("no such job" in p for p in found[0]["problems"])
    assert [q.count for q in queues] == [0, 0]  # a dry run queues nothing

    done = runner.invoke(resume, ["resumed"], env=env)
    assert done.exit_code == 0 and "queued again" in done.output, done.output
    assert queues[0].count == len(submitted.dataset_ids)
    run_jobs()
    client = CheckedClient(app)
    assert client.get("/api/v1/runs/resumed").get_json()["status"] == "classified"
    assert client.get("/api/v1/runs/resumed/journeys/2").get_json()["final_outcome"] == "targeted"
    again = runner.invoke(resume, ["resumed", "--json"], env=env)
    assert again.exit_code == 0 and json.loads(again.output) == []
