"""Scale-out: one run's datasets ingested by 1, then 2, real worker processes through Redis.

    python bench/scaleout.py --clients 1000000 [--workers 1,2]

Each configuration gets a fresh database and queues of its own; the run is
submitted as the API does (`submit_run` + the rq dispatcher), then N
`tracer worker --burst` processes work the queues until empty. Prints the wall
time per N, the speed-up over one worker, and checks that every configuration
classified the run identically. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from common import BENCH, database, ensure_run, tracer_api

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def one(manifest: Path, workers: int) -> dict[str, Any]:
    """Submit the run and time `workers` burst workers until the run is classified."""
    from tracer.store import submit_run
    from workers.queues import RQDispatcher

    api = tracer_api()
    with database(f"tracer_scale{workers}") as (url, _):
        engine = api.db.make_engine(api.Config(database_url=url))
        api.db.upgrade(engine)
        env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": REDIS_URL}
        env["TRACER_QUEUE_PREFIX"] = f"tracer-scale-{uuid.uuid4().hex[:8]}"
        config = api.Config.from_env(env)
        started = time.perf_counter()
        RQDispatcher(config).submit(submit_run(engine, api.load_manifest(manifest)))
        procs = [
            subprocess.Popen([sys.executable, "-m", "tracer", "worker", "--burst"], env=env)
            for _ in range(workers)
        ]
        codes = [p.wait() for p in procs]
        seconds = time.perf_counter() - started
        run_id = api.load_manifest(manifest).run_id
        with engine.connect() as conn:
            report = api.reconciliation(conn, run_id)
        engine.dispose()
    counts = {s["stage"]: s["outcomes"] for s in report["stages"]}
    return {"workers": workers, "seconds": round(seconds, 2), "exit_codes": codes, "counts": counts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--data-dir", type=Path, default=BENCH / "data")
    args = parser.parse_args()
    manifest = ensure_run(args.data_dir, args.clients) / "manifest.yaml"
    results = [one(manifest, int(n)) for n in args.workers.split(",")]
    base = results[0]["seconds"]
    print(f"{'workers':>8}{'seconds':>10}{'speed-up':>10}")
    for r in results:
        print(f"{r['workers']:>8}{r['seconds']:>10.2f}{base / r['seconds']:>9.2f}x")
    same = all(r["counts"] == results[0]["counts"] for r in results)
    ok = same and all(code == 0 for r in results for code in r["exit_codes"])
    print(f"identical classification across configurations: {same}")
    print(
        json.dumps(
            {
                "clients": args.clients,
                "runs": [{k: r[k] for k in ("workers", "seconds")} for r in results],
                "speedup": round(base / results[-1]["seconds"], 2),
                "identical": same,
                "ok": ok,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
