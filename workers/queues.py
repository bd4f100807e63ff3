"""Where jobs go: rq queues on Redis, or, with no REDIS_URL, a thread in this process.

Both dispatchers run the same job functions (`workers.jobs`), one ingest job per
dataset and a classify job that waits for all of them.
"""

from __future__ import annotations

import os
import re
import threading
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.utils import as_text
from sqlalchemy import Engine

from tracer.config import Config
from tracer.queries.common import iso
from tracer.store import Submitted, queued_runs
from workers import jobs
from workers.job_log import IN_PROCESS_JOB

RETRY = Retry(max=3, interval=[2, 10, 30])
INGEST, CLASSIFY = "ingest", "classify"
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
"""What rq accepts as a job id; anything else is answered 'no such job' before rq sees it."""
JOB_TTL = int(os.environ.get("TRACER_JOB_TTL", str(7 * 24 * 3600)))
"""Seconds a finished or failed job's record is kept, so `GET /jobs/{id}` can still answer."""


@dataclass(frozen=True)
class JobIds:
    ingest: list[str]
    classify: str

    def as_dict(self) -> dict[str, Any]:
        return {"ingest": self.ingest, "classify": self.classify}


class Dispatcher(Protocol):
    def submit(self, run: Submitted) -> JobIds: ...
    def status(self, job_id: str) -> dict[str, Any] | None: ...


def queue_names(config: Config) -> tuple[str, str]:
    return f"{config.queue_prefix}:{INGEST}", f"{config.queue_prefix}:{CLASSIFY}"


class RQDispatcher:
    """Jobs on Redis for `tracer worker` processes on any machine.

    Job ids are derived from the dataset and the run, so what Postgres says is pending
    names the job that should carry it: a recovery sweep (workers.recovery) finds a job
    lost with Redis or left `started` by a dead worker, and queues it again.
    """

    def __init__(self, config: Config) -> None:
        assert config.redis_url
        self.connection = Redis.from_url(config.redis_url)
        self.prefix = re.sub(r"[^A-Za-z0-9_-]", "-", config.queue_prefix)
        ingest_name, classify_name = queue_names(config)
        self.ingest_queue = Queue(ingest_name, connection=self.connection)
        self.classify_queue = Queue(classify_name, connection=self.connection)

    def ingest_job_id(self, dataset_id: int) -> str:
        return f"{self.prefix}-{INGEST}-{int(dataset_id)}"

    def classify_job_id(self, run_pk: int) -> str:
        return f"{self.prefix}-{CLASSIFY}-{int(run_pk)}"

    def submit(self, run: Submitted) -> JobIds:
        ingest = [self.enqueue_ingest(run.run_id, run.run_pk, d) for d in run.dataset_ids]
        classify = self.enqueue_classify(run.run_id, run.run_pk, ingest)
        return JobIds(ingest, classify)

    def enqueue_ingest(self, run_id: str, run_pk: int, dataset_id: int) -> str:
        """Queue (again) the load of one dataset; a previous job of that id is replaced."""
        job_id = self.ingest_job_id(dataset_id)
        self._forget(job_id)
        self.ingest_queue.enqueue(
            jobs.ingest,
            dataset_id,
            job_id=job_id,
            retry=RETRY,
            result_ttl=JOB_TTL,
            failure_ttl=JOB_TTL,
            meta={"run_id": run_id, "classify_job": self.classify_job_id(run_pk)},
            description=f"ingest dataset {dataset_id} of run {run_id}",
        )
        return job_id

    def enqueue_classify(self, run_id: str, run_pk: int, after: list[str]) -> str:
        """Queue (again) the run's classification, after the given ingest jobs."""
        job_id = self.classify_job_id(run_pk)
        self._forget(job_id)
        self.classify_queue.enqueue(
            jobs.classify,
            run_pk,
            job_id=job_id,
            depends_on=after or None,
            retry=RETRY,
            result_ttl=JOB_TTL,
            failure_ttl=JOB_TTL,
            meta={"run_id": run_id},
            description=f"classify run {run_id}",
        )
        return job_id

    def job(self, job_id: str) -> Job | None:
        """The job of that id; None if there is none, or if the id could name no job at all."""
        if not JOB_ID.fullmatch(job_id):
            return None
        try:
            return Job.fetch(job_id, connection=self.connection)
        except NoSuchJobError:
            return None

    def _forget(self, job_id: str) -> None:
        """Drop a previous job of this id from every queue and registry before it is replaced.

        An execution of a worker that died stays listed for the job about a minute longer
        than its record lives, and rq's `Job.delete` then fails fetching it: such executions
        are dropped first. So are the job's entries in its queue's started registry, which
        rq's clean-up would otherwise take, once expired, for the new job of the same id
        (and retry or fail it while it runs).
        """
        old = self.job(job_id)
        if old is None:
            return
        executions = ExecutionRegistry(job_id, connection=self.connection)
        for execution_id in self.connection.zrange(executions.key, 0, -1):
            execution = Execution(as_text(execution_id), job_id, self.connection)
            if not self.connection.exists(execution.key):
                self.connection.zrem(executions.key, execution_id)
        started = StartedJobRegistry(old.origin, connection=self.connection)
        for entry, _ in self.connection.zscan_iter(started.key, match=f"{job_id}:*"):
            self.connection.zrem(started.key, entry)
        old.delete(remove_from_queue=True)

    def status(self, job_id: str) -> dict[str, Any] | None:
        job = self.job(job_id)
        if job is None:
            return None
        status = JobStatus(job.get_status()).value
        result = job.return_value() if status == JobStatus.FINISHED else None
        error = None
        if status == JobStatus.FAILED:
            latest = job.latest_result()
            error = _last_line(latest.exc_string if latest else None)
        return {
            "id": job.id,
            "status": status,
            "description": job.description,
            "run_id": job.meta.get("run_id"),
            "enqueued_at": iso(job.enqueued_at),
            "started_at": iso(job.started_at),
            "ended_at": iso(job.ended_at),
            "result": result,
            "error": error,
        }


@dataclass
class _Local:
    id: str
    description: str
    run_id: str
    status: str = JobStatus.QUEUED.value
    result: Any = None
    error: str | None = None


@dataclass
class InProcessDispatcher:
    """No Redis: jobs run one at a time on a thread of the serving process."""

    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, "tracer-job")
    )
    jobs: dict[str, _Local] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, run: Submitted) -> JobIds:
        ingest_ids = [
            self._start(f"ingest dataset {d} of run {run.run_id}", run.run_id, jobs.ingest, d)
            for d in run.dataset_ids
        ]
        classify_id = self._start(
            f"classify run {run.run_id}", run.run_id, self._classify_after, run.run_pk, ingest_ids
        )
        return JobIds(ingest_ids, classify_id)

    def resume(self, engine: Engine) -> list[str]:
        """Take up the runs left queued when this process last stopped (no Redis to sweep)."""
        resumed = []
        for run in queued_runs(engine):
            self.submit(Submitted(run.run_pk, run.run_id, run.pending))
            resumed.append(run.run_id)
        return resumed

    def _classify_after(self, run_pk: int, ingest_ids: list[str]) -> Any:
        failed = [i for i in ingest_ids if self.jobs[i].status != JobStatus.FINISHED]
        if failed:
            raise RuntimeError(f"not run: ingest jobs failed: {', '.join(failed)}")
        return jobs.classify(run_pk)

    def _start(self, description: str, run_id: str, fn: Any, *args: Any) -> str:
        job = _Local(str(uuid.uuid4()), description, run_id)
        with self.lock:
            self.jobs[job.id] = job
        self.executor.submit(self._run, job, fn, *args)
        return job.id

    def _run(self, job: _Local, fn: Any, *args: Any) -> None:
        job.status = JobStatus.STARTED.value
        named = IN_PROCESS_JOB.set(job.id)  # the job's log line names it, as rq's do
        try:
            job.result = fn(*args)
            job.status = JobStatus.FINISHED.value
        except Exception as exc:  # a job's failure is data for GET /jobs, not a crash
            job.status = JobStatus.FAILED.value
            job.error = _last_line(traceback.format_exception_only(exc)[-1]) or str(exc)
        finally:
            IN_PROCESS_JOB.reset(named)

    def status(self, job_id: str) -> dict[str, Any] | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        return {
            "id": job.id,
            "status": job.status,
            "description": job.description,
            "run_id": job.run_id,
            "enqueued_at": None,
            "started_at": None,
            "ended_at": None,
            "result": job.result,
            "error": job.error,
        }


def dispatcher(config: Config) -> Dispatcher:
    return RQDispatcher(config) if config.redis_url else InProcessDispatcher()


def _last_line(text: str | None) -> str | None:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else None
