"""Prometheus metrics at GET /metrics (prometheus_client's text format).

Two kinds of figures:

* Requests and their latencies are counted by the process that served them. Under
  gunicorn's several workers each has its own counters, so `tracer serve` runs
  prometheus_client's multiprocess mode (`api.gunicorn_conf`): the counters live in files
  of a directory shared by the workers, and a scrape, whichever worker answers it, sums them.
* Everything about the data and the jobs is read at scrape time from where it is kept:
  runs, datasets, rows and keys from Postgres (a few aggregates over the `runs` and
  `datasets` tables), jobs by state and workers from rq's queues and registries in Redis.
  Those are done by other processes (rq workers, other API replicas) that no scrape of this
  one could count, and they survive restarts; read where they are kept, they are right
  whoever did the work. They are gauges: deleting a run lowers the rows stored.

A dependency that does not answer leaves its figures out (absent, not zero) and sets
`tracer_up{dependency=...}` to 0; the scrape itself still succeeds.

Access: open while the API is (no TRACER_API_TOKENS); with tokens configured it needs a
token of scope `read`, like the data it summarises (api.auth). Not an API operation, so
not in the OpenAPI document.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine, func, literal, select, union_all

from api.health import probes
from api.state import State
from tracer.model import DatasetStatus, RunStatus
from tracer.tables import datasets, runs
from workers import job_log
from workers.queue_stats import STATES, figures, rq_last_classification
from workers.queues import InProcessDispatcher

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
PATH = "/metrics"


@dataclass(frozen=True)
class HttpMetrics:
    requests: Counter
    duration: Histogram

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)


def init_app(app: Flask) -> HttpMetrics:
    """Register GET /metrics; the request counters it returns are what `request_log` feeds."""
    registry = CollectorRegistry()
    target: CollectorRegistry | None = registry
    if os.environ.get(MULTIPROCESS_DIR):  # counters in files; a scrape sums every worker's
        MultiProcessCollector(registry)
        target = None
    http = HttpMetrics(
        Counter(
            "tracer_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=target,
        ),
        Histogram(
            "tracer_http_request_duration_seconds",
            "Time to answer, by method and route template",
            ["method", "route"],
            registry=target,
        ),
    )
    registry.register(StateCollector(app))

    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    app.add_url_rule(PATH, "metrics", metrics, methods=["GET"])
    return http


class StateCollector:
    """Runs, datasets, rows, keys, jobs and workers, read at each scrape (see the module)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        state: State = self.app.extensions["tracer"]
        p = probes(self.app)
        stored = p.pool.submit(_stored, p.engine)  # Postgres and Redis at the same time
        up = GaugeMetricFamily(
            "tracer_up", "1 if the dependency answered this scrape", labels=["dependency"]
        )
        try:
            yield from _jobs(state, p.redis)
            answered = 1
        except Exception:  # Redis down: no job figures this time
            answered = 0
        if p.redis is not None:  # without Redis the jobs are this process's own
            up.add_metric(["redis"], answered)
        try:
            yield from stored.result()
            up.add_metric(["postgres"], 1)
        except Exception:
            up.add_metric(["postgres"], 0)
        yield up


def _stored(engine: Engine) -> list[Metric]:
    """Runs and datasets by status, with the rows and keys of the datasets: one statement."""
    by_run = select(
        literal("run").label("kind"), runs.c.status, func.count().label("n"),
        literal(0).label("rows"), literal(0).label("keys"),
    ).group_by(runs.c.status)  # fmt: skip
    by_dataset = select(
        literal("dataset"), datasets.c.status, func.count(),
        func.coalesce(func.sum(datasets.c.row_count), 0),
        func.coalesce(func.sum(datasets.c.key_count), 0),
    ).group_by(datasets.c.status)  # fmt: skip
    with engine.connect() as conn:
        found = conn.execute(union_all(by_run, by_dataset)).all()
    counts = {(r.kind, r.status): r for r in found}
    run_family = GaugeMetricFamily("tracer_runs", "Runs stored, by status", labels=["status"])
    for status in RunStatus:
        row = counts.get(("run", status.value))
        run_family.add_metric([status.value], row.n if row else 0)
    dataset_family = GaugeMetricFamily(
        "tracer_datasets", "Datasets of the stored runs, by status", labels=["status"]
    )
    for status in DatasetStatus:
        row = counts.get(("dataset", status.value))
        dataset_family.add_metric([status.value], row.n if row else 0)
    ingested = counts.get(("dataset", DatasetStatus.INGESTED.value))
    return [
        run_family,
        dataset_family,
        GaugeMetricFamily(
            "tracer_rows_ingested",
            "Rows of the ingested datasets of the stored runs (falls when a run is deleted)",
            value=ingested.rows if ingested else 0,
        ),
        GaugeMetricFamily(
            "tracer_keys_ingested",
            "Distinct keys of the ingested datasets of the stored runs, summed over datasets",
            value=ingested.keys if ingested else 0,
        ),
    ]


def _jobs(state: State, redis: Any) -> list[Metric]:
    """Jobs by queue and state, workers by queue, and the latest classification's time."""
    queues = figures(state.dispatcher, redis, state.config)
    if isinstance(state.dispatcher, InProcessDispatcher):
        last = job_log.last_classification
    else:
        last = rq_last_classification(redis, state.config)
    jobs = GaugeMetricFamily(
        "tracer_jobs", "Jobs by queue and state (as rq keeps them)", labels=["queue", "state"]
    )
    workers = GaugeMetricFamily(
        "tracer_workers", "Workers listening on the queue", labels=["queue"]
    )
    for queue in queues:
        for name in STATES:
            jobs.add_metric([queue.queue, name], queue.jobs[name])
        workers.add_metric([queue.queue], queue.workers)
    out: list[Metric] = [jobs, workers]
    if last is not None:
        out += [
            GaugeMetricFamily(
                "tracer_last_classification_seconds",
                "How long the latest finished classify job took",
                value=last.seconds,
            ),
            GaugeMetricFamily(
                "tracer_last_classification_end_timestamp_seconds",
                "When the latest finished classify job ended (Unix time)",
                value=last.ended.timestamp(),
            ),
        ]
    return out
