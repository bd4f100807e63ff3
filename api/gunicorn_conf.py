"""gunicorn's configuration for `tracer serve` (`--config python:api.gunicorn_conf`).

* Logging: gunicorn's own lines go through tracer's one stderr handler (JSON or text, as
  TRACER_LOG_FORMAT says), and its access log is off: the app logs each request itself.
* Metrics: the workers count requests in prometheus_client's multiprocess mode, in a
  directory made for this server start (or PROMETHEUS_MULTIPROC_DIR if the deployment
  gives one, emptied first: counters of a previous start must not be added to this one's).
  A worker that exits is marked dead; a directory made here is removed when gunicorn exits.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tracer import logs
from tracer.config import Config

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

_config = Config.from_env()
logconfig_dict = logs.dict_config(_config.log_format, _config.log_level)
_made: Path | None = None


def on_starting(server: Any) -> None:
    """In the master, before any worker: the metrics directory every worker will write to."""
    global _made
    given = os.environ.get(MULTIPROCESS_DIR)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
    else:
        _made = folder = Path(tempfile.mkdtemp(prefix="tracer-metrics-"))
        os.environ[MULTIPROCESS_DIR] = str(folder)
    _use_multiprocess_values()


def _use_multiprocess_values() -> None:
    """prometheus_client picks file-backed values when it is imported, and `tracer serve`
    imported it (with the app's modules) before this directory existed: pick again now,
    before any worker makes a metric."""
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _made is not None:
        shutil.rmtree(_made, ignore_errors=True)


def post_worker_init(worker: Any) -> None:
    """Move the ~200k objects of start-up (the app, its modules, the OpenAPI document) out of
    the garbage collector's generations: otherwise a full collection walks them again every
    few large requests (measured: a 10,000-key lookup's median 212 ms in-process, 93 ms
    after freezing)."""
    gc.freeze()
