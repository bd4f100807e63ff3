"""Job functions. They take ids, never objects, and open their database after the fork.

Bad input (a TracerError: unreadable file, unknown stage value...) fails the job
at once and marks its dataset and run failed; a lost database connection is
retried with back-off (see `workers.queues.RETRY`) and only recorded once the
retries are spent.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from rq import get_current_job
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from tracer import db
from tracer.config import Config
from tracer.errors import TracerError
from tracer.store import classify_step, ingest_step, record_failure


@cache
def engine() -> Engine:
    """One engine per worker process, created on first use (after the fork)."""
    return db.make_engine(Config.from_env())


def ingest(dataset_id: int) -> dict[str, Any]:
    result = _guarded(lambda: ingest_step(engine(), dataset_id), dataset_id=dataset_id)
    return {
        "dataset": result.dataset,
        "skipped": result.skipped,
        "rows": result.rows,
        "keys": result.keys,
    }


def classify(run_pk: int) -> dict[str, Any]:
    _guarded(lambda: classify_step(engine(), run_pk), run_pk=run_pk)
    return {"run_pk": run_pk, "classified": True}


def _guarded(step: Any, run_pk: int | None = None, dataset_id: int | None = None) -> Any:
    try:
        return step()
    except TracerError as exc:
        _no_more_retries()
        record_failure(engine(), run_pk, dataset_id, exc.message)
        raise
    except (OperationalError, DBAPIError) as exc:
        job = get_current_job()
        if job is None or not job.retries_left:
            record_failure(engine(), run_pk, dataset_id, f"database error: {exc.orig or exc}")
        raise


def _no_more_retries() -> None:
    """Bad input fails the same way every time: tell rq not to retry it."""
    job = get_current_job()
    if job is not None and job.retries_left:
        job.retries_left = 0
        job.save_meta()
        job.save()
