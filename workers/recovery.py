"""Runs always finish: queue again what Postgres says is pending and no live job carries.

Postgres is the source of truth (a run `queued`, its datasets `pending`); Redis only
carries jobs. A job lost with Redis, or left `started` by a worker that died (SIGKILL,
out of memory, a lost machine), is found here and queued again under the same id.
Steps are idempotent (a dataset whose content is already loaded is skipped, a
classification is replaced whole), so a job queued twice costs time, never results.
Workers sweep at start-up and every `SWEEP_INTERVAL` seconds; `tracer resume` sweeps
on demand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rq.job import Job, JobStatus
from sqlalchemy import Engine

from tracer.store import QueuedRun, queued_runs, step_running
from workers.queues import RQDispatcher

SWEEP_INTERVAL = int(os.environ.get("TRACER_SWEEP_INTERVAL", "30"))
STARTED_GRACE = timedelta(seconds=int(os.environ.get("TRACER_STARTED_GRACE", "15")))
"""A job `started` longer than this whose step holds no lock has lost its worker."""
LIVE = frozenset({JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.STARTED})


@dataclass
class Stranded:
    """A run that cannot finish by itself, and why; `requeued` once a sweep acted."""

    run_id: str
    problems: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"run_id": self.run_id, "problems": self.problems, "requeued": self.requeued}


def sweep(
    engine: Engine, dispatcher: RQDispatcher, run_id: str | None = None, act: bool = True
) -> list[Stranded]:
    """Every queued run whose work no live job carries; with `act`, queued again."""
    found = []
    for run in queued_runs(engine, run_id):
        stranded = _check(engine, dispatcher, run)
        if stranded.problems:
            if act:
                _requeue(dispatcher, run, stranded)
            found.append(stranded)
    return found


def _check(engine: Engine, dispatcher: RQDispatcher, run: QueuedRun) -> Stranded:
    stranded = Stranded(run.run_id)
    for dataset_id in run.pending:
        job_id = dispatcher.ingest_job_id(dataset_id)
        problem = _dead(engine, dispatcher.job(job_id), "dataset", dataset_id)
        if problem:
            stranded.problems.append(f"{job_id}: {problem}")
    classify_id = dispatcher.classify_job_id(run.run_pk)
    classify = dispatcher.job(classify_id)
    problem = _dead(engine, classify, "run", run.run_pk)
    if problem is None and classify is not None and stranded.problems:
        problem = "waits for ingest jobs that will not finish"
    if problem is None and classify is not None:
        problem = _waits_in_vain(engine, dispatcher, classify, run)
    if problem:
        stranded.problems.append(f"{classify_id}: {problem}")
    return stranded


def _waits_in_vain(
    engine: Engine, dispatcher: RQDispatcher, classify: Job, run: QueuedRun
) -> str | None:
    """A deferred classification waits for every ingest job it depends on to finish. A job
    whose dataset is loaded but which will not finish (its worker died between the commit
    and rq's record of it) or which is gone would keep it waiting: rq retries an abandoned
    job only once its heartbeat expires, a minute or more later, and never once its
    retries are spent."""
    if classify.get_status() != JobStatus.DEFERRED:
        return None
    pending = {dispatcher.ingest_job_id(d) for d in run.pending}  # checked already
    for job_id in classify.dependency_ids:
        if job_id in pending:
            continue
        job = dispatcher.job(job_id)
        if job is not None and job.get_status() == JobStatus.FINISHED:
            continue
        dataset_id = job.args[0] if job is not None and job.args else -1
        problem = _dead(engine, job, "dataset", dataset_id)
        if problem:
            return f"waits for {job_id} (its dataset is loaded; the job: {problem})"
    return None


def _dead(engine: Engine, job: Job | None, kind: str, ident: int) -> str | None:
    """Why this job will not do its step, or None while it may."""
    if job is None:
        return "no such job (lost with Redis, or expired)"
    status = job.get_status()
    if status not in LIVE:
        return f"{status}"
    if status == JobStatus.STARTED:
        started = job.started_at or job.enqueued_at
        if started is not None and started.replace(tzinfo=UTC) > _now() - STARTED_GRACE:
            return None
        if not step_running(engine, kind, ident):
            return f"started by worker {job.worker_name or '?'}, which holds no lock: gone"
    return None


def _requeue(dispatcher: RQDispatcher, run: QueuedRun, stranded: Stranded) -> None:
    """Queue the run's pending loads that lost their job, then its classification after them."""
    ingest = []
    for dataset_id in run.pending:
        job_id = dispatcher.ingest_job_id(dataset_id)
        job = dispatcher.job(job_id)
        if any(p.startswith(job_id + ":") for p in stranded.problems) or job is None:
            dispatcher.enqueue_ingest(run.run_id, run.run_pk, dataset_id)
            stranded.requeued.append(job_id)
        ingest.append(job_id)
    stranded.requeued.append(dispatcher.enqueue_classify(run.run_id, run.run_pk, ingest))


def _now() -> datetime:
    return datetime.now(UTC)
