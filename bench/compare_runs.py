"""How fast does tracer compare two stored runs of a big pipeline?

    python bench/compare_runs.py --clients 1000000 [--changed 194] [--requests 50]

Stores three runs of the synthetic campaign (``bench/data/clients-N/``, generated
when missing): the run itself (seed A), a **rerun** of it whose "fix" excludes
``--changed`` targeted clients at exclusions (they leave the later outputs and
gain a reported trace row there: a small, consistent set of changed clients),
and another **solution**, the same clients with other draws (seed B: about a
tenth of the clients change). Then, in this process, for each comparison:

1. the summary (matrix, stage deltas, first differences) computed from the
   stored keys (the kept comparison is deleted before each repetition), median
   of ``--repeat``; and read back once kept;
2. the first page (100 keys) of cells of the matrix: the largest changed cell,
   the smallest changed cell (the sparse case: its keys must be found among
   many), and the unchanged ``targeted``/``targeted`` cell; p50 and p99 of
   ``--requests`` calls, the summary kept (as after a first look at the matrix).

The database is ``DATABASE_URL`` when set (runs already classified there are not
ingested again), otherwise a throwaway ``tracer_compare_<pid>`` dropped at the
end. The very last line printed is one JSON object for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import yaml
from common import BENCH, database, ensure_run, tracer_api
from generate import DEFAULT_SEED

RERUN_STAGES = (
    "exclusions",
    "offer_selection",
    "offer_enrichment",
    "buffer_update",
    "buffer_selection",
    "output",
)
FIX_REASON = "stale_window_fixed"


def rerun_dir(run_dir: Path, changed: int, seed: int = 7) -> Path:
    """A rerun of `run_dir` whose fix excludes `changed` targeted clients at exclusions.

    Written next to it once (`<run>-rerun-<changed>/`); its manifest names the run's
    own files for what the fix does not touch (selection) and `rerun_of` the run.
    """
    out = run_dir.with_name(f"{run_dir.name}-rerun-{changed}")
    if (out / "manifest.yaml").exists():
        return out
    print(f"writing {out} ...", flush=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    data = run_dir / "data"
    targeted = pads.dataset(data / "output", format="parquet").to_table(columns=["client_id"])
    ids = np.unique(targeted.column("client_id").drop_null().to_numpy())
    fixed = pa.array(np.random.default_rng(seed).choice(ids, size=changed, replace=False))
    keep = ~pc.is_in(pc.field("client_id"), value_set=fixed)
    for stage in RERUN_STAGES:
        table = pads.dataset(data / stage, format="parquet").to_table(filter=keep)
        (tmp / "data" / stage).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp / "data" / stage / "part-00000.parquet")
    trace = pq.read_table(data / "trace_main.parquet")
    trace = trace.filter(pc.invert(pc.is_in(trace["client_id"], value_set=fixed)))
    logged = pa.table(
        {
            "client_id": fixed,
            "stage": pa.array(["exclusions"] * changed),
            "reason": pa.array([FIX_REASON] * changed),
            "offer_id": pa.nulls(changed, pa.int32()),
        },
        schema=trace.schema,
    )
    pq.write_table(pa.concat_tables([trace, logged]), tmp / "data" / "trace_main.parquet")
    buffer = pq.read_table(data / "trace_buffer.parquet")
    buffer = buffer.filter(pc.invert(pc.is_in(buffer["client_id"], value_set=fixed)))
    pq.write_table(buffer, tmp / "data" / "trace_buffer.parquet")
    spec = yaml.safe_load((run_dir / "manifest.yaml").read_text())
    original = spec["run"]["id"]
    spec["run"].update(id=f"{original}-rerun", rerun_of=original, label=f"rerun: {FIX_REASON}")
    spec["run"]["outputs"]["selection"] = str((data / "selection").resolve()) + "/"
    (tmp / "manifest.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (tmp / "fixed.json").write_text(json.dumps(sorted(int(i) for i in fixed.to_pylist())))
    tmp.rename(out)
    return out


def ingest(api: Any, engine: Any, manifest: Path) -> str:
    """Ingest + classify unless the run id is already classified; returns the run id."""
    from sqlalchemy import select

    run_id = yaml.safe_load(manifest.read_text())["run"]["id"]
    with engine.connect() as conn:
        classified = conn.execute(
            select(api.runs.c.classified_at).where(api.runs.c.run_id == run_id)
        ).scalar()
    if classified is not None:
        print(f"run {run_id}: already classified", flush=True)
        return run_id
    started = time.perf_counter()
    api.ingest_manifest(engine, api.load_manifest(manifest))
    print(f"run {run_id}: ingested in {time.perf_counter() - started:.1f} s", flush=True)
    return run_id


def _ms(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000, 2)


def measure(engine: Any, run_a: str, run_b: str, repeat: int, requests: int) -> dict[str, Any]:
    """Summary cold (median of `repeat`) and warm; first pages of three cells."""
    from sqlalchemy import delete

    from tracer.queries.compare import compare, compare_keys
    from tracer.tables import comparisons

    cold = []
    summary: dict[str, Any] = {}
    for _ in range(repeat):
        with engine.begin() as conn:
            conn.execute(delete(comparisons))
        with engine.connect() as conn:
            started = time.perf_counter()
            summary = compare(conn, run_a, run_b)
            cold.append(time.perf_counter() - started)
    with engine.connect() as conn:
        started = time.perf_counter()
        compare(conn, run_a, run_b)
        warm = time.perf_counter() - started
    changed = sorted((m for m in summary["matrix"] if m["a"] != m["b"]), key=lambda m: m["keys"])
    cells = {"largest_changed": changed[-1], "smallest_changed": changed[0]}
    cells["unchanged"] = next(m for m in summary["matrix"] if m["a"] == m["b"] == "targeted")
    pages = {}
    for name, cell in cells.items():
        took = []
        with engine.connect() as conn:
            for _ in range(requests):
                started = time.perf_counter()
                page = compare_keys(conn, run_a, run_b, cell["a"], cell["b"], limit=100)
                took.append(time.perf_counter() - started)
        pages[name] = {
            "a": cell["a"],
            "b": cell["b"],
            "cell_keys": cell["keys"],
            "items": len(page["items"]),
            "p50_ms": _ms(took, 0.5),
            "p99_ms": _ms(took, 0.99),
        }
    return {
        "run_a": run_a,
        "run_b": run_b,
        "changed_keys": summary["changed_keys"],
        "matrix_cells": len(summary["matrix"]),
        "summary_cold_s": round(statistics.median(cold), 3),
        "summary_cold_runs_s": [round(s, 3) for s in cold],
        "summary_kept_ms": round(warm * 1000, 2),
        "first_page": pages,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--changed", type=int, default=194, help="clients the rerun's fix changes")
    parser.add_argument("--seed-b", type=int, default=DEFAULT_SEED + 1, help="the other solution")
    parser.add_argument("--repeat", type=int, default=3, help="cold summaries per comparison")
    parser.add_argument("--requests", type=int, default=50, help="first-page calls per cell")
    parser.add_argument("--data-dir", type=Path, default=BENCH / "data")
    args = parser.parse_args(argv)
    api = tracer_api()
    load_before = os.getloadavg()[0]
    run_a_dir = ensure_run(args.data_dir, args.clients)
    run_b_dir = ensure_run(args.data_dir, args.clients, args.seed_b)
    rerun = rerun_dir(run_a_dir, args.changed)
    results = []
    with database("tracer_compare") as (url, _shared):
        from sqlalchemy import create_engine

        engine = create_engine(api.db.normalise_url(url))
        try:
            api.db.upgrade(engine)
            run_a = ingest(api, engine, run_a_dir / "manifest.yaml")
            run_rerun = ingest(api, engine, rerun / "manifest.yaml")
            run_b = ingest(api, engine, run_b_dir / "manifest.yaml")
            for name, other in (("rerun", run_rerun), ("solution", run_b)):
                result = {"comparison": name, **measure(engine, run_a, other, args.repeat,
                                                        args.requests)}  # fmt: skip
                results.append(result)
                print(f"\n{name}: {run_a} vs {other}")
                print(f"  changed keys {result['changed_keys']:,} in "
                      f"{result['matrix_cells']} matrix cells")  # fmt: skip
                print(f"  summary from the keys: {result['summary_cold_s']:.3f} s (median), "
                      f"kept: {result['summary_kept_ms']:.1f} ms")  # fmt: skip
                for cell, figures in result["first_page"].items():
                    print(f"  first page, {cell} ({figures['a']} -> {figures['b']}, "
                          f"{figures['cell_keys']:,} keys): p50 {figures['p50_ms']} ms, "
                          f"p99 {figures['p99_ms']} ms")  # fmt: skip
        finally:
            engine.dispose()
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]  # other work on the machine
    print(json.dumps({"clients": args.clients, "comparisons": results, "load_average": load}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
