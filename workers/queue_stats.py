"""How many jobs are in each state, read from where the jobs are: rq's queues and registries
in Redis (shared by every process), or the in-process dispatcher's own table.

/health and /metrics both read these at request time, so the figures are right whichever
process queued or ran the jobs. Counting never cleans a registry up (rq's `count` would
move expired jobs around as a side effect of being looked at).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from redis import Redis
from rq import Queue, Worker
from rq.job import Job

from tracer.config import Config
from workers.job_log import Classification
from workers.queues import InProcessDispatcher, RQDispatcher, queue_names

STATES = ("queued", "started", "deferred", "scheduled", "finished", "failed", "canceled")
IN_PROCESS = "in-process"


@dataclass(frozen=True)
class QueueFigures:
    queue: str
    jobs: dict[str, int]  # every state of STATES
    worker_keys: frozenset[str]  # the workers listening on the queue

    @property
    def workers(self) -> int:
        return len(self.worker_keys)


def figures(
    dispatcher: RQDispatcher | InProcessDispatcher, connection: Redis | None, config: Config
) -> list[QueueFigures]:
    """The deployment's queues: rq's, or the serving process's own job thread."""
    if isinstance(dispatcher, InProcessDispatcher):
        return [in_process_figures(dispatcher)]
    assert connection is not None
    return rq_figures(connection, config)


def listening_workers(queues: list[QueueFigures]) -> int:
    """Workers listening on any of the queues (an rq worker listens on both)."""
    return len(frozenset().union(*(q.worker_keys for q in queues)))


def rq_figures(connection: Redis, config: Config) -> list[QueueFigures]:
    """Jobs by state and listening workers, per queue of this deployment."""
    out = []
    for name in queue_names(config):
        queue = Queue(name, connection=connection)
        registries = {
            "started": queue.started_job_registry,
            "deferred": queue.deferred_job_registry,
            "scheduled": queue.scheduled_job_registry,
            "finished": queue.finished_job_registry,
            "failed": queue.failed_job_registry,
            "canceled": queue.canceled_job_registry,
        }
        with connection.pipeline(transaction=False) as pipe:
            pipe.llen(queue.key)
            for registry in registries.values():
                pipe.zcard(registry.key)
            counts = pipe.execute()
        jobs = dict(zip(("queued", *registries), (int(n) for n in counts), strict=True))
        listening = frozenset(Worker.all_keys(connection=connection, queue=queue))
        out.append(QueueFigures(name, jobs, listening))
    return out


def rq_last_classification(connection: Redis, config: Config) -> Classification | None:
    """The classify job that finished last, as rq recorded it (started_at, ended_at).

    Every classify job keeps its result for the same time (workers.queues.JOB_TTL), so the
    finished registry's highest expiry score is the job that ended last.
    """
    queue = Queue(queue_names(config)[1], connection=connection)
    latest = connection.zrevrange(queue.finished_job_registry.key, 0, 0)
    if not latest:
        return None
    job = Job.fetch_many([latest[0].decode()], connection=connection)[0]
    if job is None or job.started_at is None or job.ended_at is None:
        return None
    return Classification((job.ended_at - job.started_at).total_seconds(), job.ended_at)


def in_process_figures(dispatcher: InProcessDispatcher) -> QueueFigures:
    """What the serving process's own job thread has: its jobs by state, one worker."""
    with dispatcher.lock:
        counted = Counter(job.status for job in dispatcher.jobs.values())
    return QueueFigures(IN_PROCESS, {s: counted.get(s, 0) for s in STATES}, frozenset({IN_PROCESS}))
