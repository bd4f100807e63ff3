"""Where jobs go: rq queues on Redis, or, with no REDIS_URL, a thread in this process.

Both dispatchers run the same job functions (`workers.jobs`), one ingest job per
dataset and a classify job that waits for all of them.
"""

from __future__ import annotations

import threading
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from tracer.config import Config
from tracer.queries.common import iso
from tracer.store import Submitted
from workers import jobs

RETRY = Retry(max=3, interval=[2, 10, 30])
INGEST, CLASSIFY = "ingest", "classify"


@dataclass(frozen=True)
class JobIds:
    ingest: list[str]
    classify: str

    def as_dict(self) -> dict[str, Any]:
        return {"ingest": self.ingest, "classify": self.classify}


class Dispatcher(Protocol):
    def submit(self, run: Submitted) -> JobIds: ...
    def status(self, job_id: str) -> dict[str, Any] | None: ...
    def ping(self) -> str: ...


def queue_names(config: Config) -> tuple[str, str]:
    return f"{config.queue_prefix}:{INGEST}", f"{config.queue_prefix}:{CLASSIFY}"


class RQDispatcher:
    """Jobs on Redis for `tracer worker` processes on any machine."""

    def __init__(self, config: Config) -> None:
        assert config.redis_url
        self.connection = Redis.from_url(config.redis_url)
        ingest_name, classify_name = queue_names(config)
        self.ingest_queue = Queue(ingest_name, connection=self.connection)
        self.classify_queue = Queue(classify_name, connection=self.connection)

    def submit(self, run: Submitted) -> JobIds:
        ingest_jobs = [
            self.ingest_queue.enqueue(
                jobs.ingest,
                dataset_id,
                retry=RETRY,
                meta={"run_id": run.run_id},
                description=f"ingest dataset {dataset_id} of run {run.run_id}",
            )
            for dataset_id in run.dataset_ids
        ]
        classify_job = self.classify_queue.enqueue(
            jobs.classify,
            run.run_pk,
            depends_on=ingest_jobs,
            retry=RETRY,
            meta={"run_id": run.run_id},
            description=f"classify run {run.run_id}",
        )
        return JobIds([j.id for j in ingest_jobs], classify_job.id)

    def status(self, job_id: str) -> dict[str, Any] | None:
        try:
            job = Job.fetch(job_id, connection=self.connection)
        except NoSuchJobError:
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

    def ping(self) -> str:
        self.connection.ping()
        return "ok"


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
        try:
            job.result = fn(*args)
            job.status = JobStatus.FINISHED.value
        except Exception as exc:  # a job's failure is data for GET /jobs, not a crash
            job.status = JobStatus.FAILED.value
            job.error = _last_line(traceback.format_exception_only(exc)[-1]) or str(exc)

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

    def ping(self) -> str:
        return "not configured: jobs run in-process"


def dispatcher(config: Config) -> Dispatcher:
    return RQDispatcher(config) if config.redis_url else InProcessDispatcher()


def _last_line(text: str | None) -> str | None:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else None
