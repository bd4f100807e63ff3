"""`tracer worker`: an rq worker on the ingest and classify queues (plugged into the CLI)."""

from __future__ import annotations

import click
from redis import Redis
from rq import Queue, Worker

from tracer.config import Config
from workers.queues import queue_names


@click.command()
@click.option("--burst", is_flag=True, help="Exit when the queues are empty (batch use).")
@click.option("--name", help="Worker name (default: rq's host.pid).")
def worker(burst: bool, name: str | None) -> None:
    """Run a worker: ingest and classify jobs from Redis (REDIS_URL)."""
    config = Config.from_env()
    if not config.redis_url:
        raise click.ClickException(
            "REDIS_URL is not set: without Redis, `tracer serve` runs jobs itself"
        )
    connection = Redis.from_url(config.redis_url)
    queues = [Queue(name_, connection=connection) for name_ in queue_names(config)]
    Worker(queues, connection=connection, name=name).work(burst=burst, with_scheduler=True)
