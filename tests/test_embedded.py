"""The zero-config path: `tracer demo` with no DATABASE_URL starts a real embedded PostgreSQL.

Run as a separate process, as a new user would, so nothing of the test session leaks in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def tracer(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["TRACER_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "tracer", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_runs_on_the_embedded_database_and_reuses_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    try:
        demo = tracer(home, "demo")
        assert demo.returncode == 0, demo.stderr
        assert (home / "pgdata" / "PG_VERSION").exists()
        # The next command finds the same server and the run it stored.
        answer = tracer(home, "reconciliation", "demo-2026-11-25", "--json")
        assert answer.returncode == 0, answer.stderr
        totals = json.loads(answer.stdout)["totals"]
        assert totals["entered"] == 32191 and totals["reconciles"] is False
        # What the demo printed says the same: the verdict and the counts, whole.
        verdict = next(line for line in demo.stdout.splitlines() if line.startswith("reconciles"))
        assert verdict.split() == ["reconciles", "NO"]
        for name in ("entered", "targeted", "orphaned"):
            assert f"{totals[name]:,}" in demo.stdout, name
    finally:
        stop = tracer(home, "db", "stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout
