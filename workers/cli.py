"""`tracer worker` and `tracer resume`: rq workers that finish every run (plugged into the CLI)."""

from __future__ import annotations

import json
import logging

import click
from redis import Redis
from rq import Queue, Worker
from rq.job import Job
from rq.job_lifecycle import call_exception_handlers
from rq.scheduler import RQScheduler
from rq.scripts import release_lock
from rq.utils import as_text
from sqlalchemy import Engine

from tracer import db, logs
from tracer.cli_support import handle_errors
from tracer.config import Config
from tracer.errors import TracerError
from workers.queues import RQDispatcher, queue_names
from workers.recovery import SWEEP_INTERVAL, Stranded, sweep

log = logging.getLogger("tracer.recovery")
JOB_MONITORING_INTERVAL = 10
"""Seconds between a running job's heartbeats: how soon rq itself sees a dead worker."""


STALE_SCHEDULER = 15
"""Seconds without a refresh after which another scheduler's lock is a dead worker's."""


class TracerWorker(Worker):
    """An rq worker that also sweeps for stranded runs: at start-up, then every interval."""

    _engine: Engine | None = None
    _sweeper: RQDispatcher | None = None

    def handle_exception(self, job: Job, *exc_info: object) -> None:
        """Bad data (a TracerError: the job's own log line and the run's error name the
        file, column and row) is an outcome, not a crash: one line, no traceback. Anything
        else keeps rq's traceback. Either way rq's handlers record the failure."""
        if not isinstance(exc_info[1], TracerError):
            super().handle_exception(job, *exc_info)
            return
        self.log.warning("Worker %s: job %s failed: %s", self.name, job.id, exc_info[1].message)
        call_exception_handlers(self._exc_handlers, job, *exc_info)

    def run_maintenance_tasks(self) -> None:
        self._release_dead_scheduler_locks()
        super().run_maintenance_tasks()
        try:
            if self._engine is None or self._sweeper is None:  # one of each per worker
                config = _config()
                self._engine, self._sweeper = db.make_engine(config), RQDispatcher(config)
            for stranded in sweep(self._engine, self._sweeper):
                log.warning("run %s was stranded (%s): queued again %s", stranded.run_id,
                            "; ".join(stranded.problems), ", ".join(stranded.requeued))  # fmt: skip
        except Exception:  # a sweep that fails must not stop the worker: next time
            log.exception("recovery sweep failed")
        finally:  # no connection kept between sweeps (none leaks, none is inherited by a fork)
            if self._engine is not None:
                self._engine.dispose()

    def _release_dead_scheduler_locks(self) -> None:
        """A worker killed outright leaves its scheduler's locks to expire a minute later (rq's
        TTL), and until then nothing enqueues the jobs due for a retry (a lost connection's
        back-off). A live scheduler refreshes its locks every second: a lock not refreshed for
        STALE_SCHEDULER seconds is a dead one's, released for this worker's scheduler to take
        at its next maintenance (rq's own retry of `acquire_locks`)."""
        if self.scheduler is None:
            return
        full = (self.scheduler.interval + 60) * 1000  # the TTL a refresh sets, in ms
        for queue in self.queues:
            key = RQScheduler.get_locking_key(queue.name)
            holder, left = self.connection.get(key), self.connection.pttl(key)
            if holder is None or as_text(holder) == self.scheduler.name:
                continue
            if 0 < left < full - STALE_SCHEDULER * 1000 and release_lock(
                self.connection, key, as_text(holder)
            ):
                log.warning("released %s, not refreshed for %.0f s: its worker is gone", key,
                            (full - left) / 1000)  # fmt: skip


def _config() -> Config:
    config = Config.from_env()
    if not config.redis_url:
        raise click.ClickException(
            "REDIS_URL is not set: without Redis, `tracer serve` runs jobs itself"
        )
    return config


def _dispatcher() -> RQDispatcher:
    return RQDispatcher(_config())


@click.command()
@click.option("--burst", is_flag=True, help="Exit when the queues are empty (batch use).")
@click.option("--name", help="Worker name (default: rq's host.pid).")
@handle_errors
def worker(burst: bool, name: str | None) -> None:
    """Run a worker: ingest and classify jobs from Redis (REDIS_URL).

    It also finds runs whose jobs were lost (Redis restarted) or whose worker died, at
    start-up and every TRACER_SWEEP_INTERVAL seconds, and queues their work again.
    Logs one line per job on stderr, JSON unless TRACER_LOG_FORMAT=text.
    """
    config = _config()
    logs.configure(config.log_format, config.log_level)
    connection = Redis.from_url(config.redis_url)
    queues = [Queue(name_, connection=connection) for name_ in queue_names(config)]
    TracerWorker(
        queues,
        connection=connection,
        name=name,
        maintenance_interval=SWEEP_INTERVAL,
        worker_ttl=SWEEP_INTERVAL + 15,  # an idle worker wakes (and sweeps) this often
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
    ).work(burst=burst, with_scheduler=True)


@click.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--dry-run", is_flag=True, help="Only list stranded runs and why.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def resume(run_id: str | None, dry_run: bool, as_json: bool) -> None:
    """Queue again the work of RUN (default: every run) that no live job carries."""
    found = sweep(db.make_engine(Config.from_env()), _dispatcher(), run_id, act=not dry_run)
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in found], indent=2))
        return
    if not found:
        click.echo("no stranded run: every queued run has a live job")
    for stranded in found:
        click.echo(_describe(stranded, dry_run))


def _describe(stranded: Stranded, dry_run: bool) -> str:
    lines = [f"run {stranded.run_id}:"] + [f"  {p}" for p in stranded.problems]
    if not dry_run:
        lines.append(f"  queued again: {', '.join(stranded.requeued)}")
    return "\n".join(lines)
