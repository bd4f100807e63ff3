"""Damage done for real: workers killed with SIGKILL inside their steps, Redis and PostgreSQL
restarted under a run. Every run must end classified, row for row as an undisturbed one,
without being posted again.

The machinery is bench/chaos.py's, which runs many more kill points (`python bench/chaos.py
--kill-points 60`); these are a few representative ones. Workers run with
TRACER_SWEEP_INTERVAL=2 and TRACER_STARTED_GRACE=2, on a database of this module's own (a
sweep acts on every queued run of its database, other tests' included).

Tests marked `serial` restart this machine's Redis or PostgreSQL, or pause Redis writes:
scripts/test runs them after the others, alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from rq.job import JobStatus
from sqlalchemy import Engine, create_engine, text

from bench.chaos import (
    DATASETS,
    Cluster,
    KillPoint,
    differences,
    ensure_postgres,
    ensure_redis,
    key_outcome_rows,
    kill_at,
    manifest_body,
    restart_postgres,
    restart_redis,
    run_row,
    scratch_database,
    undisturbed,
    wait_classified,
)
from bench.chaos import campaign as make_campaign
from bench.chaos import dataset_ids as names_to_ids
from bench.chaos import manifest_file as reference_manifest
from tracer.store import step_running

CLIENTS = 20_000
FINISH_WITHIN = 45
"""Seconds a stranded run may take once a fresh worker starts: the sweep's doing, well before
rq's own clean-up would notice a dead worker (its heartbeat lasts 70 s)."""


@pytest.fixture(scope="module")
def chaos_url() -> Iterator[str]:
    with scratch_database("tracer_chaos_test") as url:
        yield url


@pytest.fixture(scope="module")
def chaos_engine(chaos_url: str) -> Iterator[Engine]:
    engine = create_engine(chaos_url, pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def contents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two synthetic campaigns (bench/generate.py): same pipeline, other clients."""
    folder = tmp_path_factory.mktemp("chaos")
    return {"A": make_campaign(folder, CLIENTS, 7), "B": make_campaign(folder, CLIENTS, 8)}


@pytest.fixture(scope="module")
def reference(chaos_engine: Engine, contents: dict[str, Path]) -> dict[str, Any]:
    """Each content classified undisturbed (the workers' steps in order, in this process)."""
    out = {}
    for label, run_dir in contents.items():
        pk, seconds = undisturbed(chaos_engine, reference_manifest(run_dir, f"undisturbed-{label}"))
        out[label] = {"pk": pk, "seconds": seconds}
    return out


@pytest.fixture
def cluster(chaos_url: str, contents: dict[str, Path], tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster.make(chaos_url, contents["A"].parent, tmp_path / "logs")
    try:
        yield cluster
    finally:
        cluster.cleanup()


def post(client: Any, cluster: Cluster, engine: Engine, run_dir: Path, run_id: str) -> Any:
    """POST the manifest as a pipeline does; the run's pk and every job id by dataset name."""
    response = client.post("/api/v1/runs", json=manifest_body(run_dir, run_id))
    assert response.status_code == 202, response.get_json()
    created = response.get_json()
    pk = run_row(engine, run_id).pk
    ids = {n: cluster.dispatcher.ingest_job_id(i) for n, i in names_to_ids(engine, pk).items()}
    assert sorted(created["job_ids"]["ingest"]) == sorted(ids.values())
    return pk, {**ids, "classify": created["job_ids"]["classify"]}


def assert_exact(engine: Engine, reference_pk: int, run_pk: int) -> None:
    """Nothing lost, nothing duplicated, nothing different: every compared table, row for row."""
    diff = differences(engine, reference_pk, run_pk)
    assert all(d == {"lost": 0, "extra": 0} for d in diff.values()), diff
    assert key_outcome_rows(engine, run_pk) == key_outcome_rows(engine, reference_pk)


def finish(engine: Engine, cluster: Cluster, run_id: str, after: Any = None) -> float:
    """Start a fresh worker; the seconds from its start until the run is classified."""
    started = time.monotonic()
    cluster.start_worker()
    row = wait_classified(engine, run_id, after, timeout=120)
    seconds = time.monotonic() - started
    assert row is not None, f"{run_id} not finished in 120 s\n{cluster.log_tail()}"
    assert row.status == "classified", (row.error, cluster.log_tail())
    return seconds


@pytest.mark.serial  # kill points are timed against an undisturbed run: no parallel load
def test_workers_killed_inside_ingest_and_classification_leave_the_run_exact(
    cluster: Cluster, chaos_engine: Engine, contents: dict[str, Path], reference: dict[str, Any]
) -> None:
    """Three workers die by SIGKILL, each inside a step of the same run; a fourth finishes it."""
    client = cluster.app().test_client()
    seconds = reference["A"]["seconds"]
    worker = cluster.start_worker()
    pk, ids = post(client, cluster, chaos_engine, contents["A"], "killed")
    for point in (
        KillPoint("offer_selection", "started"),  # the moment its job flips to started
        KillPoint("offer_enrichment", "after", 0.3),  # inside its transaction, loading
        KillPoint("classify", "after", 0.4),  # inside the classification's transaction
    ):
        # Each worker dies in its step; the next one, fresh, also recovers what it left.
        landed = kill_at(cluster, chaos_engine, worker, pk, ids, point, seconds)
        assert landed.in_step and not landed.committed, f"{point} missed: {landed.statuses}"
        # Stranded: the job says started, its worker is dead, Postgres has the run queued.
        assert landed.statuses[point.target] == JobStatus.STARTED.value
        assert run_row(chaos_engine, "killed").status == "queued"
        started = time.monotonic()
        worker = cluster.start_worker()
    row = wait_classified(chaos_engine, "killed", None, timeout=120)
    took = time.monotonic() - started
    assert row is not None and row.status == "classified", cluster.log_tail()
    print(f"\nstranded run finished {took:.1f} s after a fresh worker started")
    assert took < FINISH_WITHIN, cluster.log_tail()
    assert_exact(chaos_engine, reference["A"]["pk"], pk)
    # Every job of the run ended once, finished, under its one id: nothing was posted again.
    assert {cluster.status(j) for j in ids.values()} == {"finished"}


@pytest.mark.serial
def test_a_worker_killed_between_the_commit_and_rq_record(
    cluster: Cluster, chaos_engine: Engine, contents: dict[str, Path], reference: dict[str, Any]
) -> None:
    """The last load commits, then its worker dies before rq records the job finished (Redis
    writes paused for that moment): the classification must not wait for it forever."""
    client = cluster.app().test_client()
    worker = cluster.start_worker()
    pk, ids = post(client, cluster, chaos_engine, contents["B"], "killed-after-commit")
    point = KillPoint(DATASETS[-1], "committed")
    landed = kill_at(cluster, chaos_engine, worker, pk, ids, point, reference["B"]["seconds"])
    assert landed.in_step and landed.committed, landed.statuses
    with chaos_engine.connect() as conn:
        loaded = conn.execute(
            text("SELECT count(*) FROM datasets WHERE run_pk = :pk AND status = 'ingested'"),
            {"pk": pk},
        ).scalar()
    assert loaded == len(DATASETS)  # everything is loaded, ...
    assert landed.statuses[DATASETS[-1]] == "started"  # ... but its job is left started
    assert landed.statuses["classify"] == "deferred"  # and the classification waits for it
    took = finish(chaos_engine, cluster, "killed-after-commit")
    print(f"\nstranded run finished {took:.1f} s after a fresh worker started")
    assert took < FINISH_WITHIN, cluster.log_tail()
    assert_exact(chaos_engine, reference["B"]["pk"], pk)


@pytest.mark.serial
def test_redis_restarted_between_post_and_pickup(
    cluster: Cluster, chaos_engine: Engine, contents: dict[str, Path], reference: dict[str, Any]
) -> None:
    """Every job is lost with Redis; Postgres still says the run is queued: a worker started
    once Redis is back sweeps at start-up and queues the work again under the same ids."""
    from workers.recovery import sweep

    client = cluster.app().test_client()
    pk, ids = post(client, cluster, chaos_engine, contents["A"], "redis-restart")
    assert {cluster.status(j) for j in ids.values()} == {"queued", "deferred"}
    try:
        restart_redis()
    finally:
        ensure_redis()
    assert {cluster.status(j) for j in ids.values()} == {None}  # gone
    assert client.get(f"/api/v1/jobs/{ids['classify']}").status_code == 404
    stranded = sweep(chaos_engine, cluster.dispatcher, "redis-restart", act=False)
    assert [len(s.problems) for s in stranded] == [len(ids)], stranded
    took = finish(chaos_engine, cluster, "redis-restart")
    print(f"\nrun finished {took:.1f} s after a worker started on the restarted Redis")
    assert took < FINISH_WITHIN, cluster.log_tail()
    assert_exact(chaos_engine, reference["A"]["pk"], pk)
    # The ids the POST answered with are the ones that carried the work.
    for job_id in ids.values():
        assert client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "finished"


@pytest.mark.serial
def test_postgres_restarted_in_the_middle_of_an_ingest(
    cluster: Cluster,
    chaos_engine: Engine,
    contents: dict[str, Path],
    reference: dict[str, Any],
    engine: Engine,
) -> None:
    """The load of `output` has written its chunks and waits (on a row lock this test holds)
    to record itself when PostgreSQL restarts: its job is retried (2 s back-off) and the run
    ends exactly as an undisturbed one. Just before, a worker was killed while its scheduler
    (what enqueues retries) held the queues' scheduler locks, which rq keeps for a minute."""
    from rq.scheduler import RQScheduler

    client = cluster.app().test_client()
    first, _ = cluster.start_worker()
    queues = (cluster.dispatcher.ingest_queue, cluster.dispatcher.classify_queue)
    locks = [RQScheduler.get_locking_key(q.name) for q in queues]
    deadline = time.monotonic() + 60
    while not all(cluster.redis.exists(k) for k in locks):
        assert time.monotonic() < deadline, cluster.log_tail()
        time.sleep(0.05)
    cluster.kill(first)
    assert all(cluster.redis.exists(k) for k in locks)  # a dead worker's
    cluster.start_worker()
    holder = chaos_engine.connect()
    try:
        pk, ids = post(client, cluster, chaos_engine, contents["B"], "pg-restart")
        dataset = names_to_ids(chaos_engine, pk)["output"]
        holder.execute(
            text("SELECT 1 FROM datasets WHERE id = :i FOR NO KEY UPDATE"), {"i": dataset}
        )
        deadline = time.monotonic() + 120
        while not _blocked_in_ingest(chaos_engine):
            assert time.monotonic() < deadline, cluster.log_tail()
            time.sleep(0.05)
        assert step_running(chaos_engine, "dataset", dataset)  # inside its transaction
        restarted = time.monotonic()
        try:
            restart_postgres()
        finally:
            ensure_postgres()
    finally:
        with suppress(Exception):  # its session ended with the restart
            holder.close()
    chaos_engine.dispose()
    engine.dispose()  # the session's: its connections ended with the restart
    row = wait_classified(chaos_engine, "pg-restart", None, timeout=120)
    took = time.monotonic() - restarted
    assert row is not None and row.status == "classified", cluster.log_tail()
    print(f"\nrun finished {took:.1f} s after PostgreSQL began its restart")
    assert took < FINISH_WITHIN, cluster.log_tail()  # not the minute of rq's stale lock
    assert_exact(chaos_engine, reference["B"]["pk"], pk)
    job = cluster.job(ids["output"])
    assert job is not None and job.get_status() == JobStatus.FINISHED
    assert job.retries_left == 2  # one retry, on the connection error


def _blocked_in_ingest(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query ILIKE 'UPDATE datasets%'"
                )
            ).scalar()
        )


def test_the_undisturbed_references_agree_with_each_other(
    chaos_engine: Engine, contents: dict[str, Path], reference: dict[str, Any]
) -> None:
    """The comparison can fail: two contents differ, the same content twice does not."""
    again, _ = undisturbed(chaos_engine, reference_manifest(contents["A"], "undisturbed-A2"))
    assert_exact(chaos_engine, reference["A"]["pk"], again)
    diff = differences(chaos_engine, reference["A"]["pk"], reference["B"]["pk"])
    assert diff["key_outcomes"]["lost"] > 1000 and diff["key_outcomes"]["extra"] > 1000


def test_a_dead_workers_expired_execution_does_not_break_requeueing(
    cluster: Cluster,
    chaos_engine: Engine,
    contents: dict[str, Path],
    reference: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """rq keeps listing a dead worker's execution for a minute after its record expired
    (heartbeat 70 s, listing 130 s); `Job.delete` then raised, so replacing the job failed:
    the sweep errored every time and a re-POST answered 500. The record's expiry is brought
    forward here (PEXPIRE) instead of waiting 70 s."""
    from rq.executions import ExecutionRegistry
    from rq.registry import StartedJobRegistry

    from workers import recovery

    monkeypatch.setattr(recovery, "STARTED_GRACE", timedelta(seconds=2))  # as the workers'
    client = cluster.app().test_client()
    worker = cluster.start_worker()
    pk, ids = post(client, cluster, chaos_engine, contents["A"], "expired-execution")
    point = KillPoint("selection", "started")
    kill_at(cluster, chaos_engine, worker, pk, ids, point, reference["A"]["seconds"])
    job_id = ids["selection"]
    executions = ExecutionRegistry(job_id, connection=cluster.redis)
    listed = cluster.redis.zrange(executions.key, 0, -1)
    assert listed  # the dead worker's execution
    for execution_id in listed:
        cluster.redis.pexpire(f"rq:execution:{job_id}:{execution_id.decode()}", 1)
    time.sleep(0.1)
    assert cluster.redis.zrange(executions.key, 0, -1) == listed  # still listed, record gone

    time.sleep(2.1)  # TRACER_STARTED_GRACE: the job is now a dead worker's
    found = recovery.sweep(chaos_engine, cluster.dispatcher, "expired-execution")
    assert [s.requeued for s in found] == [[job_id, ids["classify"]]], found
    started = StartedJobRegistry(cluster.job(job_id).origin, connection=cluster.redis)
    assert not list(cluster.redis.zscan_iter(started.key, match=f"{job_id}:*"))
    # The pipeline posts the run again meanwhile: accepted, the same ids.
    assert post(client, cluster, chaos_engine, contents["A"], "expired-execution")[1] == ids
    took = finish(chaos_engine, cluster, "expired-execution")
    assert took < FINISH_WITHIN, cluster.log_tail()
    assert_exact(chaos_engine, reference["A"]["pk"], pk)
