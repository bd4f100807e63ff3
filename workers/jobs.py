"""Job functions. They take ids, never objects, and open their database after the fork.

Failures are told apart by cause. Bad input (a TracerError: unreadable file, a key
that is not an integer, a NUL in a key...) and data the database refuses fail the job
at once: the dataset and the run are marked failed with the message, and the run's
classify job is cancelled instead of waiting forever. Only a lost or refused
connection is retried with back-off (see `workers.queues.RETRY`), and recorded the
same way once the retries are spent.
"""

from __future__ import annotations

from contextlib import suppress
from functools import cache
from typing import Any

from rq import get_current_job
from rq.exceptions import InvalidJobOperation, InvalidJobOperationError, NoSuchJobError
from rq.job import Job
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from tracer import db
from tracer.config import Config
from tracer.errors import TracerError
from tracer.openlineage_out import emit_after_classification
from tracer.store import classify_step, ingest_step, record_failure
from workers.job_log import logged

CONNECTION_ERRORS = (OperationalError, InterfaceError)
"""Worth another try: the server went away, restarted, or refused the connection."""


@cache
def engine() -> Engine:
    """One engine per worker process, created on first use (after the fork)."""
    return db.make_engine(Config.from_env())


def ingest(dataset_id: int) -> dict[str, Any]:
    with logged("ingest", engine(), dataset_id=dataset_id) as line:
        result = _guarded(lambda: ingest_step(engine(), dataset_id), dataset_id=dataset_id)
        line.update(rows=result.rows, keys=result.keys, skipped=result.skipped)
    return {
        "dataset": result.dataset,
        "skipped": result.skipped,
        "rows": result.rows,
        "keys": result.keys,
    }


def classify(run_pk: int) -> dict[str, Any]:
    with logged("classify", engine(), run_pk=run_pk):
        _guarded(lambda: classify_step(engine(), run_pk), run_pk=run_pk)
    emit_after_classification(engine(), run_pk=run_pk)  # only when configured; never raises
    return {"run_pk": run_pk, "classified": True}


def _guarded(step: Any, run_pk: int | None = None, dataset_id: int | None = None) -> Any:
    try:
        return step()
    except TracerError as exc:
        _fail(run_pk, dataset_id, exc.message)
        raise
    except CONNECTION_ERRORS as exc:
        job = get_current_job()
        if job is None or not job.retries_left:
            _fail(run_pk, dataset_id, f"database unreachable: {exc.orig or exc}")
        raise
    except DBAPIError as exc:  # the database refused the data: the same every time
        _fail(run_pk, dataset_id, f"the database refused the data: {exc.orig or exc}")
        raise


def _fail(run_pk: int | None, dataset_id: int | None, message: str) -> None:
    """No retry; the failure recorded in Postgres; the run's classify job cancelled."""
    job = get_current_job()
    if job is not None and job.retries_left:
        job.retries_left = 0
        job.save()
    record_failure(engine(), run_pk, dataset_id, message)
    classify_id = job.meta.get("classify_job") if job is not None else None
    if classify_id:  # already gone, finished or cancelled: nothing to do
        with suppress(NoSuchJobError, InvalidJobOperation, InvalidJobOperationError):
            Job.fetch(classify_id, connection=job.connection).cancel()
