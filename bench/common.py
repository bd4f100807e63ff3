"""What the benchmarks share: tracer's entry points, the synthetic run and a throwaway database."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from generate import DEFAULT_SEED, generate

# `python bench/x.py` puts bench/ on the path, not the repository root (tests/harness.py).
sys.path.append(str(Path(__file__).resolve().parent.parent))
from tests.harness import free_port as free_port  # re-exported for the scripts
from tests.harness import wait_healthy as wait_healthy

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
ADMIN_URL = os.environ.get(
    "TRACER_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def tracer_api() -> types.SimpleNamespace:
    """Imported on demand, so the reference-only modes run without a database driver."""
    from tracer import db
    from tracer.config import Config
    from tracer.manifest import load_manifest
    from tracer.queries.reconciliation import reconciliation
    from tracer.store import delete_run, ingest_manifest
    from tracer.tables import runs

    return types.SimpleNamespace(
        db=db,
        Config=Config,
        load_manifest=load_manifest,
        ingest_manifest=ingest_manifest,
        reconciliation=reconciliation,
        delete_run=delete_run,
        runs=runs,
    )


def ensure_run(
    data_dir: Path, clients: int, seed: int = DEFAULT_SEED, *, in_child: bool = True
) -> Path:
    """The run folder for (clients, seed), generated when missing.

    In a child process by default, so the caller's peak RSS stays that of what it
    measures (compare.py); `in_child=False` generates in this process (load.py).
    """
    name = f"clients-{clients}" if seed == DEFAULT_SEED else f"clients-{clients}-seed-{seed}"
    run_dir = data_dir / name
    if not (run_dir / "manifest.yaml").exists():
        print(f"generating {run_dir} ...", flush=True)
        if in_child:
            cmd = [sys.executable, str(BENCH / "generate.py"), "--clients", str(clients)]
            cmd += ["--out", str(run_dir), "--seed", str(seed)]
            subprocess.run(cmd, check=True)
        else:
            generate(clients, run_dir, seed)
    return run_dir


@contextmanager
def database(prefix: str) -> Iterator[tuple[str, bool]]:
    """(url, shared): DATABASE_URL as it is, or a throwaway database dropped afterwards."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url, True
        return
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{os.getpid()}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name, False
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
