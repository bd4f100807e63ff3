"""One log line per job run, whichever process runs it (an rq worker's work horse, or the
serving process's job thread without Redis): the job, its run and dataset, how long it took,
whether it succeeded, and for an ingest the rows and keys it stored.

The run and dataset are looked up before the job starts, so a failed job's line names them
too; a lookup that fails (the database is down: the job will say so) leaves them empty.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rq import get_current_job
from sqlalchemy import Engine, null, select

from tracer.errors import summary
from tracer.tables import datasets, runs

log = logging.getLogger("tracer.job")


@dataclass(frozen=True)
class Classification:
    """The latest finished classification: how long it took and when it ended."""

    seconds: float
    ended: datetime


IN_PROCESS_JOB: ContextVar[str | None] = ContextVar("in_process_job", default=None)
"""The id the in-process dispatcher gave the job running on this thread (rq has its own)."""

last_classification: Classification | None = None
"""Kept for /metrics when jobs run in the serving process (rq keeps its own record)."""


@contextmanager
def logged(
    kind: str, engine: Engine, *, dataset_id: int | None = None, run_pk: int | None = None
) -> Iterator[dict[str, Any]]:
    """Time the block and log its outcome; the block adds its figures to the dict it gets."""
    global last_classification
    job = get_current_job()
    line: dict[str, Any] = {"job_id": job.id if job else IN_PROCESS_JOB.get(), "kind": kind}
    line.update(_subject(engine, dataset_id, run_pk))
    if line["run_id"] is None and job is not None:
        line["run_id"] = job.meta.get("run_id")
    started = time.perf_counter()
    try:
        yield line
    except Exception as exc:
        line.update(outcome="failed", error=summary(exc), duration_ms=_ms(started))
        line["will_retry"] = bool(job is not None and job.retries_left)
        log.error(
            "%s job %s failed after %.0f ms%s: %s%s", kind, line["job_id"],
            line["duration_ms"], _about(line), line["error"],
            " (will be retried)" if line["will_retry"] else "",
            extra=line,
        )  # fmt: skip
        raise
    line.update(outcome="succeeded", duration_ms=_ms(started))
    if kind == "classify":
        last_classification = Classification(line["duration_ms"] / 1000, datetime.now(UTC))
    figures = f": {line['rows']:,} rows, {line['keys']:,} keys" if "rows" in line else ""
    log.info(
        "%s job %s succeeded in %.0f ms%s%s", kind, line["job_id"],
        line["duration_ms"], _about(line), figures,
        extra=line,
    )  # fmt: skip


def _subject(engine: Engine, dataset_id: int | None, run_pk: int | None) -> dict[str, Any]:
    """The run id (and the dataset's name) the job is about."""
    query = (
        select(runs.c.run_id, datasets.c.name)
        .join(datasets, datasets.c.run_pk == runs.c.pk)
        .where(datasets.c.id == dataset_id)
        if dataset_id is not None
        else select(runs.c.run_id, null()).where(runs.c.pk == run_pk)
    )
    try:
        with engine.connect() as conn:
            row = conn.execute(query).first()
    except Exception:  # the job itself meets the same failure and reports it
        row = None
    return {"run_id": row[0] if row else None, "dataset": row[1] if row else None}


def _about(line: dict[str, Any]) -> str:
    parts = [f"dataset {line['dataset']!r}"] if line.get("dataset") else []
    parts += [f"run {line['run_id']!r}"] if line.get("run_id") else []
    return f" ({' of '.join(parts)})" if parts else ""


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
