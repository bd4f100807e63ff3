"""Chaos: SIGKILL workers at many points of a run, restart Redis and PostgreSQL under it, and
read all along; every run must end classified exactly as an undisturbed one, with no re-post.

    python bench/chaos.py --kill-points 30
    python bench/chaos.py --kill-points 60 --clients 100000 --redis-restarts 2 --postgres-restarts 2

On a throwaway database (or DATABASE_URL) and queues of its own:

* two synthetic campaigns (bench/generate.py, two seeds: contents A and B), and for each the
  undisturbed classification (the workers' step functions called in order in this process);
* kill points: one run is posted (the API's POST, once per point) alternately with content A
  and B; a `tracer worker` process, started in a session of its own so that the kill reaches
  the worker, its work-horse and its scheduler, is killed with SIGKILL at the point; a fresh
  worker is started, and the run must end classified with every row of key_outcomes,
  anomalies, key_reasons, stage_summaries, its totals and gap cells and its datasets equal
  to the undisturbed classification of that content. The points go round every dataset's
  ingest and the classification: when the job flips to `started`, at a fraction of the
  step's undisturbed duration, and between the step's commit and rq's record of it (Redis
  writes paused for that moment);
* restarts: Redis restarted between the post and the pickup (every job lost), PostgreSQL
  restarted in the middle of an ingest (its job waits on a row lock this script holds);
* a reader thread asks the API (Flask test client) for the run's reconciliation, a journey
  and an anomaly page all along: every answer must be 200, equal to one of the two
  published classifications, and each `classified_at` must always come with the same one.

Prints one line per point and a summary (kill points survived, restarts survived, records
lost or duplicated, reads refused, time for a stranded run to finish after a fresh worker
starts); the last line is one JSON object. tests/test_chaos.py runs a few of the same points.
Restarting Redis or PostgreSQL disturbs everything else using them on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# `python bench/chaos.py` puts bench/ on the path, not the repository root (bench.chaos to tests).
sys.path.append(str(Path(__file__).resolve().parent.parent))

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from redis import Redis
from rq.job import Job, JobStatus
from sqlalchemy import Engine, create_engine, text

from bench.generate import SINGLE_FILES, STAGES, generate
from tracer import db
from tracer.config import Config
from tracer.manifest import load_manifest
from tracer.store import classify_step, ingest_step, step_running, submit_run

REPO = Path(__file__).resolve().parent.parent
DATASETS = (*STAGES, *SINGLE_FILES)
"""The campaign's datasets, in the manifest's order (their ingest jobs are queued so)."""
FAST_RECOVERY = {"TRACER_SWEEP_INTERVAL": "2", "TRACER_STARTED_GRACE": "2"}
REDIS_URL = os.environ.get("TRACER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_URL = os.environ.get(
    "TRACER_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


# --- data -----------------------------------------------------------------------------------


def campaign(folder: Path, clients: int, seed: int) -> Path:
    """The synthetic campaign of bench/generate.py under `folder` (generated once)."""
    run_dir = folder / f"campaign-{clients}-{seed}"
    if not (run_dir / "manifest.yaml").exists():
        generate(clients, run_dir, seed)
    return run_dir


def manifest_body(run_dir: Path, run_id: str) -> dict[str, Any]:
    """The campaign's manifest as the API takes it: this run id, absolute paths."""
    body = yaml.safe_load((run_dir / "manifest.yaml").read_text())
    body["run"].update(id=run_id, label=f"chaos {run_dir.name}")
    for part in ("outputs", "traceability"):
        body["run"][part] = {n: f"{run_dir}/{p}" for n, p in body["run"][part].items()}
    return body


def manifest_file(run_dir: Path, run_id: str) -> Path:
    path = run_dir / f"manifest-{run_id}.json"
    path.write_text(json.dumps(manifest_body(run_dir, run_id), indent=2))
    return path


def break_key(run_dir: Path, dataset: str, bad: str) -> Path:
    """A copy of the campaign whose `dataset` has its int64 key as text, one value `bad`: it
    passes the manifest's validation and fails its ingest job."""
    broken = run_dir.with_name(f"{run_dir.name}-broken-{dataset}")
    if broken.exists():
        return broken
    shutil.copytree(run_dir, broken)
    path = broken / "data" / f"{dataset}.parquet"
    table = pq.read_table(path)
    column = table.column("client_id").cast(pa.string()).to_pylist()
    column[len(column) // 2] = bad
    index = table.schema.get_field_index("client_id")
    pq.write_table(table.set_column(index, "client_id", pa.array(column, pa.string())), path)
    return broken


# --- the database ---------------------------------------------------------------------------


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A migrated database of its own, dropped afterwards: sweeps see only this test's runs."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        engine = create_engine(url)
        db.upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def undisturbed(engine: Engine, manifest: Path) -> tuple[int, dict[str, float]]:
    """Run the workers' steps in order in this process: the reference classification, and how
    long each step took (seconds, by dataset name and `classify`)."""
    submitted = submit_run(engine, load_manifest(manifest))
    seconds = {}
    for name, dataset_id in zip(DATASETS, submitted.dataset_ids, strict=True):
        started = time.perf_counter()
        ingest_step(engine, dataset_id)
        seconds[name] = time.perf_counter() - started
    started = time.perf_counter()
    classify_step(engine, submitted.run_pk)
    seconds["classify"] = time.perf_counter() - started
    return submitted.run_pk, seconds


_WITH_STAGES = "key_outcomes k JOIN key_patterns p ON p.run_pk = k.run_pk AND p.pattern = k.pattern"
"""Each key with its stages' text: pattern numbers are the run's own."""
_COMPARED = {
    "key_outcomes": "SELECT key, final, entered, targeted, traced, traced_reported, p.stages, "
    "cause_stage, cause_outcome, reporting_cause_stage, reporting_cause_outcome "
    f"FROM {_WITH_STAGES} WHERE k.run_pk = {{pk}}",
    "anomalies": "SELECT outcome, stage, key, rows_in, rows_out, rows_dropped "
    "FROM anomalies WHERE run_pk = {pk}",
    "key_reasons": "SELECT r.key, r.stage, d.role, d.name, r.reason, r.rows FROM key_reasons r "
    "JOIN datasets d ON d.id = r.dataset_id WHERE r.run_pk = {pk}",
    "stage_summaries": "SELECT stage_index, stage, outcomes, rows, flags, totals "
    "FROM stage_summaries WHERE run_pk = {pk}",
    "runs": "SELECT status, totals, gap_cells FROM runs WHERE pk = {pk}",
    "datasets": "SELECT role, name, status, fingerprint, row_count, key_count, null_key_rows, "
    "duplicate_rows, columns FROM datasets WHERE run_pk = {pk}",
    "dataset_keys": "SELECT d.name, count(c.seq) > 0 FROM datasets d LEFT JOIN dataset_chunks c "
    "ON c.dataset_id = d.id AND c.run_pk = d.run_pk WHERE d.run_pk = {pk} GROUP BY d.name",
}


def differences(engine: Engine, reference_pk: int, run_pk: int) -> dict[str, dict[str, int]]:
    """Per table, the rows of the reference missing from the run (`lost`) and the rows of the
    run the reference does not have (`extra`: duplicated or wrong), as multisets."""
    out = {}
    with engine.connect() as conn:
        for table, query in _COMPARED.items():
            ref, got = query.format(pk=int(reference_pk)), query.format(pk=int(run_pk))
            lost = conn.execute(text(f"SELECT count(*) FROM ({ref} EXCEPT ALL {got}) x")).scalar()
            extra = conn.execute(text(f"SELECT count(*) FROM ({got} EXCEPT ALL {ref}) x")).scalar()
            out[table] = {"lost": int(lost or 0), "extra": int(extra or 0)}
    return out


def key_outcome_rows(engine: Engine, run_pk: int) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT key, final, entered, targeted, traced, traced_reported, p.stages "
                    f"FROM {_WITH_STAGES} WHERE k.run_pk = :pk ORDER BY key"
                ),
                {"pk": run_pk},
            )
        ]


def run_row(engine: Engine, run_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT pk, status, error, classified_at FROM runs WHERE run_id = :r"),
            {"r": run_id},
        ).first()


def dataset_ids(engine: Engine, run_pk: int) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT name, id FROM datasets WHERE run_pk = :pk"), {"pk": run_pk}
        ).all()
    return {r.name: r.id for r in rows}


# --- services -------------------------------------------------------------------------------


def redis_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", "6379", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def redis_up() -> bool:
    return redis_cli("ping").stdout.strip() == "PONG"


def restart_redis() -> None:
    """Shut this machine's Redis down without saving (every job gone) and start it again."""
    redis_cli("shutdown", "nosave")
    for _ in range(100):
        if not redis_up():
            break
        time.sleep(0.05)
    ensure_redis()


def ensure_redis() -> None:
    """Redis answering on 127.0.0.1:6379, started as .ci/run starts it when it is not."""
    if redis_up():
        return
    subprocess.run(
        [
            *("redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379"),
            *("--save", "", "--appendonly", "no"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    for _ in range(300):
        if redis_up():
            return
        time.sleep(0.1)
    raise RuntimeError("redis did not answer PING within 30 s of its restart")


def _pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def postgres_up() -> bool:
    done = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"], timeout=30)
    return done.returncode == 0


def restart_postgres() -> None:
    """Restart this machine's PostgreSQL (every session ends) and wait until it answers."""
    try:
        _pg_ctl("restart")
    finally:
        ensure_postgres()


def ensure_postgres() -> None:
    if not postgres_up():
        with suppress(subprocess.CalledProcessError):
            _pg_ctl("start")
    for _ in range(600):
        if postgres_up():
            return
        time.sleep(0.1)
    raise RuntimeError("postgres did not answer within 60 s of its restart")


# --- workers --------------------------------------------------------------------------------


def session_pids(sid: int) -> list[int]:
    """Every process in session `sid` (a worker started with start_new_session=True)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


@dataclass
class Cluster:
    """Real `tracer worker` processes on one database and queues of their own."""

    env: dict[str, str]
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from workers.queues import RQDispatcher

        self.logs.mkdir(parents=True, exist_ok=True)
        self.dispatcher = RQDispatcher(Config.from_env(self.env))
        self.redis = Redis.from_url(self.env["REDIS_URL"])

    @classmethod
    def make(cls, database_url: str, data_root: Path, logs: Path) -> Cluster:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACER_")}
        env.update(
            DATABASE_URL=database_url,
            REDIS_URL=REDIS_URL,
            TRACER_QUEUE_PREFIX=f"chaos-{uuid.uuid4().hex[:8]}",
            TRACER_DATA_ROOTS=str(data_root),
            **FAST_RECOVERY,
        )
        return cls(env, logs)

    def app(self) -> Any:
        from api import create_app

        return create_app(Config.from_env(self.env))

    def start_worker(self) -> tuple[subprocess.Popen[bytes], str]:
        """A worker in a session of its own (so killpg reaches its work-horse); its name."""
        name = f"chaos-{uuid.uuid4().hex[:10]}"
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            [sys.executable, "-m", "tracer", "worker", "--name", name],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.workers.append(process)
        self.names.append(name)
        return process, name

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> list[int]:
        """SIGKILL the worker's whole session: the worker, its scheduler and its work-horse
        (which rq puts in a process group of its own, so killpg on the worker's group alone
        would leave it running). Returns the pids killed."""
        pids = session_pids(process.pid)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=30)
        return pids

    def stop_all(self) -> None:
        for process in self.workers:
            self.kill(process)
        self.workers.clear()

    def log_tail(self, lines: int = 60) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log"), key=lambda p: p.stat().st_mtime)[-3:]:
            text_ = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text_))
        return "\n".join(out)

    def job(self, job_id: str) -> Job | None:
        return self.dispatcher.job(job_id)

    def status(self, job_id: str) -> str | None:
        job = self.job(job_id)
        return None if job is None else JobStatus(job.get_status()).value

    def started_by(self, job_id: str, worker: str, timeout: float = 120) -> None:
        """Wait until `worker` has started the job (its status flipped to `started`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job is not None and job.worker_name == worker:
                if job.get_status() == JobStatus.STARTED:
                    return
                if job.get_status() in (JobStatus.FINISHED, JobStatus.FAILED):
                    raise RuntimeError(f"{job_id} ended ({job.get_status()}) before it was seen")
            time.sleep(0.002)
        raise TimeoutError(f"{job_id} was not started by {worker} within {timeout} s")

    def cleanup(self) -> None:
        """Stop the workers and remove this cluster's queues and jobs from Redis."""
        self.stop_all()
        with suppress(Exception):
            prefix = self.dispatcher.prefix
            for key in self.redis.scan_iter(match=f"*{prefix}*", count=1000):
                self.redis.delete(key)
            for name in self.names:  # what a killed worker left registered
                self.redis.delete(f"rq:worker:{name}", f"rq:worker:{name}:executions")
                self.redis.srem("rq:workers", f"rq:worker:{name}")


def wait_classified(
    engine: Engine, run_id: str, after: Any, timeout: float, tick: Callable[[], None] = lambda: None
) -> Any:
    """The run's row once it is classified later than `after` (or failed); None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick()
        with suppress(Exception):  # Postgres restarting
            row = run_row(engine, run_id)
            if row is not None and row.status == "failed":
                return row
            if (
                row is not None
                and row.status == "classified"
                and (after is None or row.classified_at > after)
            ):
                return row
        time.sleep(0.02)
    return None


# --- kill points ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KillPoint:
    """Where a worker dies: in `target`'s step (a dataset name or `classify`), `when` the job
    flips to started (`started`), `fraction` of the step's undisturbed time later (`after`),
    or between the step's commit and rq's record of it (`committed`)."""

    target: str
    when: str = "started"
    fraction: float = 0.0

    @classmethod
    def parse(cls, text_: str) -> KillPoint:
        """`target:when[:fraction]`, e.g. `trace_buffer:committed`, `classify:after:0.5`."""
        target, when, *fraction = text_.split(":")
        if target not in (*DATASETS, "classify") or when not in ("started", "after", "committed"):
            raise ValueError(f"not a kill point: {text_!r}")
        return cls(target, when, float(fraction[0]) if fraction else 0.0)

    def __str__(self) -> str:
        at = {"started": "at start", "committed": "after commit"}.get(
            self.when, f"at {self.fraction:.0%}"
        )
        return f"{self.target} {at}"


def spread(count: int) -> list[KillPoint]:
    """`count` points round every step: at start, then at fractions of its time, after commit."""
    targets = [*DATASETS, "classify"]
    rounds: list[tuple[str, float]] = [
        ("started", 0.0),
        ("after", 0.5),
        ("committed", 0.0),
        ("after", 0.25),
        ("after", 0.9),
        ("after", 0.75),
        ("after", 0.1),
        ("after", 0.6),
    ]
    points = []
    for i in range(count):
        when, fraction = rounds[(i // len(targets)) % len(rounds)]
        fraction += 0.05 * (i // (len(targets) * len(rounds)))  # later passes shift a little
        points.append(KillPoint(targets[i % len(targets)], when, min(fraction, 0.99)))
    return points


@dataclass
class Landed:
    point: KillPoint
    in_step: bool  # the target's job was still `started` (its worker's) when the kill landed
    committed: bool  # the step's transaction had committed before the kill
    statuses: dict[str, str | None]


def kill_at(
    cluster: Cluster,
    engine: Engine,
    worker: tuple[subprocess.Popen[bytes], str],
    run_pk: int,
    job_ids: dict[str, str],
    point: KillPoint,
    seconds: dict[str, float],
) -> Landed:
    """Wait for the point in `worker`'s work on the run, then SIGKILL its process group.

    `after` counts from the moment the step holds its lock, inside its transaction."""
    process, name = worker
    job_id = job_ids[point.target]
    cluster.started_by(job_id, name)
    kind, ident = (
        ("run", run_pk) if point.target == "classify" else ("dataset", _dataset_id(job_id))
    )
    if point.when == "after":
        _wait_locked(engine, kind, ident)
        time.sleep(point.fraction * seconds[point.target])
    elif point.when == "committed":
        _kill_after_commit(cluster, engine, process, kind, ident)
    in_step = cluster.status(job_id) == "started"
    cluster.kill(process)
    statuses = {target: cluster.status(j) for target, j in job_ids.items()}
    return Landed(
        point,
        in_step and statuses[point.target] == "started",
        _committed(engine, kind, ident),
        statuses,
    )


def _wait_locked(engine: Engine, kind: str, ident: int) -> None:
    """Until the step holds its advisory lock: it is inside its transaction."""
    deadline = time.monotonic() + 60
    while not step_running(engine, kind, ident):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{kind} {ident}: the step never took its lock")
        time.sleep(0.002)


def _committed(engine: Engine, kind: str, ident: int) -> bool:
    """Has this attempt's step committed (its dataset loaded, or the run classified)?"""
    query = (
        "SELECT status = 'ingested' FROM datasets WHERE id = :i"
        if kind == "dataset"
        else "SELECT status = 'classified' FROM runs WHERE pk = :i"
    )
    with engine.connect() as conn:
        return bool(conn.execute(text(query), {"i": ident}).scalar())


def _dataset_id(job_id: str) -> int:
    return int(job_id.rsplit("-", 1)[1])


def _kill_after_commit(
    cluster: Cluster, engine: Engine, process: subprocess.Popen[bytes], kind: str, ident: int
) -> None:
    """Let the step commit while rq cannot write (Redis paused for writes), then kill: the step
    is done in Postgres and its job stays `started` in Redis with a dead worker."""
    _wait_locked(engine, kind, ident)
    deadline = time.monotonic() + 60
    cluster.redis.execute_command("CLIENT", "PAUSE", "20000", "WRITE")
    try:
        while time.monotonic() < deadline:
            if not step_running(engine, kind, ident) and _committed(engine, kind, ident):
                break
            time.sleep(0.002)
        cluster.kill(process)
    finally:
        cluster.redis.execute_command("CLIENT", "UNPAUSE")


# --- reads ----------------------------------------------------------------------------------


def published_answers(client: Any, run_id: str, keys: list[int]) -> dict[str, Any]:
    """What a run's published classification answers, without the run header (which names it)."""
    answers = {}
    for path in _read_paths(run_id, keys):
        response = client.get(path)
        assert response.status_code == 200, (path, response.get_json())
        answers[path.split(run_id, 1)[1]] = _strip(response.get_json(), run_id)
    return answers


def _read_paths(run_id: str, keys: list[int]) -> list[str]:
    base = f"/api/v1/runs/{run_id}"
    return [
        f"{base}/reconciliation",
        f"{base}/anomalies?outcome=orphaned&limit=50",
        f"{base}/anomalies?outcome=multiplied&limit=50",
        *(f"{base}/journeys/{k}" for k in keys),
    ]


def _strip(answer: Any, run_id: str) -> Any:
    """The answer without what names the run: its header, page links, the id inside URLs."""
    if isinstance(answer, dict):
        return {
            k: _strip(v, run_id)
            for k, v in answer.items()
            if k not in ("run", "rerun", "next", "next_url")
        }
    if isinstance(answer, list):
        return [_strip(v, run_id) for v in answer]
    if isinstance(answer, str):
        return answer.replace(f"/runs/{run_id}/", "/runs/RUN/")
    return answer


@dataclass
class Reads:
    """What a reader saw: refusals, wrong answers, and per classified_at the contents seen."""

    total: int = 0
    refused: list[tuple[str, int, Any]] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    by_status: dict[str, int] = field(default_factory=dict)
    published: dict[str, dict[str, int]] = field(default_factory=dict)  # at -> label -> reads

    def check(
        self, client: Any, run_id: str, path: str, expected: dict[str, dict[str, Any]]
    ) -> None:
        """Read `path` once: 200, equal to one of the `expected` contents' answers."""
        response = client.get(path)
        self.total += 1
        body = response.get_json()
        if response.status_code != 200:
            self.refused.append((path, response.status_code, body))
            return
        run = body["run"]
        self.by_status[run["status"]] = self.by_status.get(run["status"], 0) + 1
        part = path.split(run_id, 1)[1]
        answer = _strip(body, run_id)
        same = [label for label, answers in expected.items() if answers[part] == answer]
        if not same:
            self.wrong.append(f"{path} at {run['classified_at']}: no published answer")
        elif len(same) == 1:  # some answers are the same in both contents
            by_label = self.published.setdefault(run["classified_at"], {})
            by_label[same[0]] = by_label.get(same[0], 0) + 1

    @property
    def torn(self) -> dict[str, dict[str, int]]:
        """classified_at values some reads answered with the other content's data (reads that
        overlapped a publication): by content, how many reads."""
        return {at: labels for at, labels in self.published.items() if len(labels) > 1}

    @property
    def torn_reads(self) -> int:
        """Reads in the minority content of their classified_at."""
        return sum(sum(n.values()) - max(n.values()) for n in self.torn.values())


class Reader(threading.Thread):
    """Reads the run in a loop until stopped (or paused while Postgres restarts)."""

    def __init__(
        self, app: Any, run_id: str, keys: list[int], expected: dict[str, dict[str, Any]]
    ) -> None:
        super().__init__(daemon=True)
        self.client = app.test_client()
        self.paths = _read_paths(run_id, keys)
        self.run_id = run_id
        self.expected = expected
        self.reads = Reads()
        self.stopped = threading.Event()
        self.paused = threading.Event()
        self.idle = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stopped.is_set():
            if self.paused.is_set():
                self.idle.set()
                time.sleep(0.01)
                continue
            self.idle.clear()
            self.reads.check(
                self.client, self.run_id, self.paths[i % len(self.paths)], self.expected
            )
            i += 1
            time.sleep(0.002)

    @contextmanager
    def pause(self) -> Iterator[None]:
        self.paused.set()
        self.idle.wait(timeout=30)
        try:
            yield
        finally:
            self.paused.clear()


# --- the bench ------------------------------------------------------------------------------


@dataclass
class Point:
    name: str
    survived: bool
    in_step: bool
    seconds: float | None
    lost: int
    extra: int
    detail: str = ""


class Bench:
    RUN = "chaos-run"

    def __init__(self, args: argparse.Namespace, database_url: str, folder: Path) -> None:
        self.args = args
        self.engine = create_engine(database_url, pool_pre_ping=True)
        self.contents = {
            "A": campaign(folder, args.clients, args.seed),
            "B": campaign(folder, args.clients, args.seed + 1),
        }
        self.cluster = Cluster.make(database_url, folder, folder / "logs")
        self.reference: dict[str, int] = {}
        self.seconds: dict[str, dict[str, float]] = {}
        for label, run_dir in self.contents.items():
            manifest = manifest_file(run_dir, f"undisturbed-{label}")
            self.reference[label], self.seconds[label] = undisturbed(self.engine, manifest)
        self.app = self.cluster.app()
        self.client = self.app.test_client()
        self.points: list[Point] = []
        self.restarts: list[Point] = []
        self.last = ""
        self.boot_seconds: list[float] = []

    def other(self) -> str:
        """The content the run was not last posted with: every post changes every dataset."""
        self.last = "B" if self.last == "A" else "A"
        return self.last

    def post(self, label: str) -> tuple[int, dict[str, str]]:
        response = self.client.post(
            "/api/v1/runs", json=manifest_body(self.contents[label], self.RUN)
        )
        assert response.status_code == 202, response.get_json()
        created = response.get_json()
        pk = run_row(self.engine, self.RUN).pk
        ids = {
            name: self.cluster.dispatcher.ingest_job_id(ident)
            for name, ident in dataset_ids(self.engine, pk).items()
        }
        ids["classify"] = created["job_ids"]["classify"]
        assert sorted(created["job_ids"]["ingest"]) == sorted(
            v for k, v in ids.items() if k != "classify"
        )
        return pk, ids

    def finish(
        self, name: str, label: str, before: Any, started: float, in_step: bool, worker: str = ""
    ) -> Point:
        """Wait for the run to end, and compare it with the undisturbed classification."""
        booted: list[float] = []

        def tick() -> None:  # when the fresh worker registered with Redis: its start-up time
            if worker and not booted and self.cluster.redis.exists(f"rq:worker:{worker}"):
                booted.append(time.monotonic() - started)

        row = wait_classified(self.engine, self.RUN, before, self.args.timeout, tick)
        seconds = time.monotonic() - started if row is not None else None
        self.boot_seconds.extend(booted)
        if row is None or row.status != "classified":
            why = "timed out" if row is None else f"{row.status}: {row.error}"
            return Point(name, False, in_step, seconds, 0, 0, why)
        diff = differences(self.engine, self.reference[label], row.pk)
        lost = sum(d["lost"] for d in diff.values())
        extra = sum(d["extra"] for d in diff.values())
        bad = {t: d for t, d in diff.items() if d["lost"] or d["extra"]}
        return Point(name, not bad, in_step, seconds, lost, extra, json.dumps(bad) if bad else "")

    def kill_points(self, points: list[KillPoint]) -> None:
        worker = self.cluster.start_worker()
        for point in points:
            label = self.other()
            before = run_row(self.engine, self.RUN)
            pk, ids = self.post(label)
            try:
                landed = kill_at(
                    self.cluster, self.engine, worker, pk, ids, point, self.seconds[label]
                )
            except (TimeoutError, RuntimeError) as exc:
                self.points.append(Point(str(point), False, False, None, 0, 0, f"not hit: {exc}"))
                self.cluster.kill(worker[0])
                worker = self.cluster.start_worker()
                continue
            started = time.monotonic()
            worker = self.cluster.start_worker()  # fresh; also the next point's victim
            inside = landed.in_step and landed.committed == (point.when == "committed")
            result = self.finish(
                str(point), label, before and before.classified_at, started, inside, worker[1],
            )  # fmt: skip
            self.points.append(result)
            self._print(result, f"content {label}")

    def redis_restarts(self, count: int) -> None:
        self.cluster.stop_all()
        for _ in range(count):
            label = self.other()
            before = run_row(self.engine, self.RUN)
            self.post(label)
            try:
                restart_redis()
            finally:
                ensure_redis()
            left = self.cluster.redis.keys(f"rq:job:{self.cluster.dispatcher.prefix}*")
            started = time.monotonic()
            worker = self.cluster.start_worker()
            result = self.finish(
                f"redis restarted after POST ({len(left)} jobs left)",
                label,
                before and before.classified_at,
                started,
                True,
            )
            self.cluster.kill(worker[0])
            self.restarts.append(result)
            self._print(result, f"content {label}")

    def postgres_restarts(self, count: int, reader: Reader | None) -> None:
        self.cluster.stop_all()
        worker = self.cluster.start_worker()
        for i in range(count):
            label = self.other()
            before = run_row(self.engine, self.RUN)
            dataset = DATASETS[(i * 3 + 2) % len(DATASETS)]
            pk, ids = self.post(label)
            ident = dataset_ids(self.engine, pk)[dataset]
            holder = self.engine.connect()
            try:
                holder.execute(
                    text("SELECT 1 FROM datasets WHERE id = :i FOR NO KEY UPDATE"), {"i": ident}
                )
                waiting = _wait_blocked_ingest(self.engine, ident)
                started = time.monotonic()
                with reader.pause() if reader else _nothing():
                    restart_postgres()
            finally:
                with suppress(Exception):
                    holder.close()
            self.engine.dispose()
            result = self.finish(
                f"postgres restarted in the ingest of {dataset}", label,
                before and before.classified_at, started, waiting,
            )  # fmt: skip
            job = self.cluster.job(ids[dataset])
            retried = job is not None and job.retries_left is not None and job.retries_left < 3
            if result.survived and not retried:
                result.survived, result.detail = False, "the ingest job was not retried"
            self.restarts.append(result)
            self._print(result, f"content {label}")
        self.cluster.kill(worker[0])

    @staticmethod
    def _print(point: Point, note: str) -> None:
        took = f"{point.seconds:6.1f} s" if point.seconds is not None else "   -   "
        mark = "ok  " if point.survived else "FAIL"
        hit = "" if point.in_step else " (the kill missed the step's transaction)"
        print(f"{mark} {point.name:<38} {note}: finished {took} after a fresh worker{hit}"
              f"{' ' + point.detail if point.detail else ''}", flush=True)  # fmt: skip


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _wait_blocked_ingest(engine: Engine, dataset_id: int, timeout: float = 120) -> bool:
    """Wait until the dataset's ingest is inside its transaction, blocked on our row lock
    (its chunks written, its final UPDATE waiting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            blocked = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query ILIKE 'UPDATE datasets%'"
                )
            ).scalar()
        if blocked:
            return True
        time.sleep(0.02)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kill-points", type=int, default=30, help="how many, spread out")
    parser.add_argument(
        "--points", type=lambda t: [KillPoint.parse(p) for p in t.split(",")],
        help="these points instead, e.g. trace_buffer:committed,classify:after:0.5",
    )  # fmt: skip
    parser.add_argument("--clients", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis-restarts", type=int, default=1)
    parser.add_argument("--postgres-restarts", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=180, help="seconds per point")
    parser.add_argument("--data-dir", type=Path, default=REPO / "bench" / "data" / "chaos")
    args = parser.parse_args(argv)
    ensure_redis()
    ensure_postgres()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with scratch_database("tracer_chaos") as url:
        bench = Bench(args, url, args.data_dir.resolve())
        try:
            print(
                f"campaign of {args.clients} clients, 9 datasets; undisturbed steps (s): "
                + ", ".join(f"{k} {v:.2f}" for k, v in bench.seconds["A"].items()),
                flush=True,
            )
            # The run's first classification, then every point re-ingests it (A, B, A...).
            first = bench.cluster.start_worker()
            bench.post(bench.other())
            assert wait_classified(bench.engine, Bench.RUN, None, args.timeout) is not None
            bench.cluster.kill(first[0])
            keys = sample_keys(bench.engine, bench.reference["A"], bench.reference["B"])
            expected = {
                label: published_answers(bench.client, f"undisturbed-{label}", keys)
                for label in bench.contents
            }
            reader = Reader(bench.app, Bench.RUN, keys, expected)
            reader.start()
            bench.kill_points(args.points or spread(args.kill_points))
            bench.redis_restarts(args.redis_restarts)
            bench.postgres_restarts(args.postgres_restarts, reader)
            reader.stopped.set()
            reader.join(timeout=30)
        finally:
            bench.cluster.cleanup()
            bench.engine.dispose()
    return _summary(bench, reader.reads, time.monotonic() - started)


def sample_keys(engine: Engine, run_pk: int, other_pk: int) -> list[int]:
    """A key of each final outcome of one run that the other run also has."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT DISTINCT ON (a.final) a.key FROM key_outcomes a JOIN key_outcomes b "
                "ON b.run_pk = :other AND b.key = a.key WHERE a.run_pk = :pk "
                "ORDER BY a.final, a.key"
            ),
            {"pk": run_pk, "other": other_pk},
        ).all()
    return [int(r.key) for r in rows]


def _summary(bench: Bench, reads: Reads, seconds: float) -> int:
    points, restarts = bench.points, bench.restarts
    survived = sum(p.survived for p in points)
    restarts_ok = sum(r.survived for r in restarts)
    everything = points + restarts
    lost = sum(p.lost for p in everything)
    extra = sum(p.extra for p in everything)
    times = [p.seconds for p in points if p.seconds is not None]
    in_step = sum(p.in_step for p in points)
    print()
    print(f"kill points survived:       {survived}/{len(points)} ({in_step} landed where aimed)")
    print(f"restarts survived:          {restarts_ok}/{len(restarts)}")
    print(f"records lost / duplicated:  {lost} / {extra}")
    print(
        f"reads refused:              {len(reads.refused)} of {reads.total} "
        f"(wrong answers {len(reads.wrong)}; torn, a classification's answer under the "
        f"other's classified_at: {reads.torn_reads}; by run status {reads.by_status})"
    )
    if times:
        print(
            "time to finish after a fresh worker: "
            f"median {statistics.median(times):.1f} s, min {min(times):.1f} s, "
            f"max {max(times):.1f} s"
        )
    if bench.boot_seconds:
        print(
            "  of which the fresh worker's start-up (python -m tracer worker until registered): "
            f"median {statistics.median(bench.boot_seconds):.1f} s"
        )
    for path, status, body in reads.refused[:5]:
        print(f"  refused: {path} -> {status} {body}")
    for wrong in reads.wrong[:5]:
        print(f"  wrong: {wrong}")
    for at, labels in reads.torn.items():
        print(f"  classified_at {at}: reads by content {labels}")
    print(f"wall time {seconds:.0f} s")
    ok = (
        survived == len(points)
        and restarts_ok == len(restarts)
        and not (lost or extra or reads.refused or reads.wrong or reads.torn)
    )
    print(
        json.dumps(
            {
                "kill_points": len(points),
                "kill_points_survived": survived,
                "landed_where_aimed": in_step,
                "restarts": len(restarts),
                "restarts_survived": restarts_ok,
                "records_lost": lost,
                "records_duplicated": extra,
                "reads": reads.total,
                "reads_refused": len(reads.refused),
                "reads_wrong": len(reads.wrong),
                "reads_torn": reads.torn_reads,
                "finish_after_fresh_worker_s": {
                    "median": round(statistics.median(times), 2) if times else None,
                    "max": round(max(times), 2) if times else None,
                },
                "worker_start_up_s": round(statistics.median(bench.boot_seconds), 2)
                if bench.boot_seconds
                else None,
                "ok": ok,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
