"""tracer end to end against the notebook answer: same counts? how much slower? how big?

    python bench/compare.py --clients 200000 [--data-dir bench/data] [--repeat 3]

Generates the run into ``DATA_DIR/clients-N/`` if missing (fixed seed, in a
child process so this process's peak RSS is the measured phases only), then in
this process:

1. tracer: a fresh database (a throwaway ``tracer_bench_<pid>`` on the local
   server unless ``DATABASE_URL`` is set), migrations, then timed
   ingest + classify of the manifest, then the reconciliation read back;
2. ``reference.duckdb_counts`` and 3. ``reference.pandas_counts``.

It prints a table (phase times, rows/s, ratios, peak RSS, Postgres storage)
and, as the very last line, one JSON object for scripts: ``counts_equal`` is
true only when tracer, DuckDB and pandas (unless ``--skip-pandas``) agree on every
stage and outcome.
Times are medians over ``--repeat`` repetitions; each tracer repetition gets
its own fresh database (or its own run id in ``DATABASE_URL``'s database), so
tracer's unchanged-content shortcut never makes a repetition free.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import BENCH, database, ensure_run, tracer_api
from generate import DEFAULT_SEED, expected_counts
from reference import (
    OUTCOMES,
    Counts,
    dataset_rows,
    diff_counts,
    duckdb_counts,
    pandas_counts,
    read_manifest,
)


def peak_rss_mb() -> float:
    """Peak resident set of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_cpu_s() -> float:
    """CPU seconds this process used so far, every thread (DuckDB's) included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Phase:
    name: str
    seconds: list[float] = field(default_factory=list)
    rows: int | None = None  # rows processed, for rows/s
    rss_after_mb: float = 0.0
    cpu_seconds: list[float] = field(default_factory=list)  # this process's CPU

    @property
    def median_cpu(self) -> float | None:
        return statistics.median(self.cpu_seconds) if self.cpu_seconds else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


def timed(phase: Phase, fn: Callable[[], Any]) -> Any:
    started, cpu = time.perf_counter(), process_cpu_s()
    result = fn()
    phase.seconds.append(time.perf_counter() - started)
    phase.cpu_seconds.append(process_cpu_s() - cpu)
    phase.rss_after_mb = peak_rss_mb()
    return result


# --------------------------------------------------------------------------- tracer


@dataclass
class TracerResult:
    counts: Counts | None = None
    storage: dict[str, int] = field(default_factory=dict)  # bytes added per table
    error: str | None = None
    reconciliation: dict[str, Any] | None = None
    steps: list[tuple[str, float]] = field(default_factory=list)  # (what ended, seconds)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # query -> p50/p99
    server_peak_mb: float | None = None  # largest VmHWM among the run's Postgres backends
    server_cpu_s: float | None = None  # CPU of the database's backends (parallel workers not)
    delete_s: float | None = None
    storage_after_delete: int | None = None


STORAGE_SQL = """
SELECT coalesce(pg_partition_root(c.oid)::text, c.oid::regclass::text) AS tbl,
       sum(pg_total_relation_size(c.oid))::bigint AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')
GROUP BY 1
"""


def storage_by_table(engine: Any) -> dict[str, int]:
    """Bytes per table (partitions summed into their root), indexes and TOAST included."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return {row.tbl: int(row.bytes) for row in conn.execute(text(STORAGE_SQL))}


def run_tracer(api: Any, manifest: Path, repetition: int, phases: dict[str, Phase]) -> TracerResult:
    """One repetition: fresh database, migrate, ingest+classify, reconciliation, storage."""
    result = TracerResult()
    with database("tracer_bench") as (url, shared):
        engine = api.db.make_engine(api.Config(database_url=url))
        variant: Path | None = None
        try:
            timed(phases["migrate"], lambda: api.db.upgrade(engine))
            if shared:  # a run id of its own, so nothing is skipped as unchanged
                variant = _manifest_variant(manifest, f"-{os.getpid()}-{repetition}")
            loaded = timed(phases["load"], lambda: api.load_manifest(variant or manifest))
            before = storage_by_table(engine)
            cpu_before = server_cpu_s(engine)
            run_id = timed(phases["ingest"], lambda: _ingest(api, engine, loaded, result.steps))
            after = storage_by_table(engine)
            result.storage = {t: after[t] - before.get(t, 0) for t in after}

            def read() -> dict[str, Any]:
                with engine.connect() as conn:
                    return api.reconciliation(conn, run_id)

            rec = timed(phases["reconcile"], read)
            result.reconciliation = rec
            result.counts = {
                s["stage"]: {o: (s.get("outcomes") or {}).get(o) for o in OUTCOMES}
                for s in rec["stages"]
            }
            result.latency_ms = lookup_latencies(engine, run_id)
            result.server_peak_mb = server_peak_mb(engine)
            result.server_cpu_s = server_cpu_s(engine) - cpu_before
            started = time.perf_counter()
            api.delete_run(engine, run_id)
            result.delete_s = time.perf_counter() - started
            result.storage_after_delete = sum(storage_by_table(engine).values()) - sum(
                before.values()
            )
        finally:
            if variant is not None:
                variant.unlink(missing_ok=True)
            engine.dispose()
    return result


def lookup_latencies(engine: Any, run_id: str, samples: int = 2000) -> dict[str, dict[str, float]]:
    """In-process latency of the questions users ask, on random keys of the run (no HTTP)."""
    from sqlalchemy import text

    from tracer.queries.anomalies import anomalies
    from tracer.queries.journey import journey
    from tracer.queries.reconciliation import reconciliation

    with engine.connect() as conn:
        keys = (
            conn.execute(
                text(
                    "SELECT k.key FROM key_outcomes k JOIN runs r ON r.pk = k.run_pk "
                    "WHERE r.run_id = :r ORDER BY random() LIMIT :n"
                ),
                {"r": run_id, "n": samples},
            )
            .scalars()
            .all()
        )
        questions = {
            "journey": [lambda k=k: journey(conn, run_id, [k]) for k in keys],
            "anomalies_first_page": [lambda: anomalies(conn, run_id, "orphaned", limit=100)] * 200,
            "reconciliation": [lambda: reconciliation(conn, run_id)] * 200,
        }
        out = {}
        for name, calls in questions.items():
            took = []
            for call in calls:
                started = time.perf_counter()
                call()
                took.append((time.perf_counter() - started) * 1000)
            took.sort()
            out[name] = {
                "p50": round(took[len(took) // 2], 3),
                "p99": round(took[min(len(took) - 1, int(len(took) * 0.99))], 3),
            }
        return out


def _backends(engine: Any) -> list[int]:
    from sqlalchemy import text

    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            ).scalars()
        )


def server_cpu_s(engine: Any) -> float:
    """CPU seconds (user + system, from /proc) of this database's Postgres backends: with
    this process's own, what the work cost whatever else the machine was running."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in _backends(engine):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def server_peak_mb(engine: Any) -> float | None:
    """Peak resident memory (VmHWM) of this database's Postgres backends, from /proc."""
    pids = _backends(engine)
    peaks = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return round(max(peaks), 1) if peaks else None


def _ingest(api: Any, engine: Any, manifest: Any, steps: list[tuple[str, float]]) -> str:
    """ingest_manifest, noting when each dataset is loaded; what follows the last is classify."""
    started = time.perf_counter()
    last = [started]

    def mark(what: str) -> None:
        now = time.perf_counter()
        steps.append((what, now - last[0]))
        last[0] = now

    run_id = api.ingest_manifest(
        engine, manifest, progress=lambda name, rows: mark(f"ingest {name}")
    )
    mark("classify")
    return run_id


def _manifest_variant(manifest: Path, suffix: str) -> Path:
    import yaml

    spec = yaml.safe_load(manifest.read_text())
    spec["run"]["id"] += suffix
    path = manifest.with_name(f".manifest{suffix}.yaml")  # same folder: relative paths hold
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# --------------------------------------------------------------------------- report


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:8.2f}"


def _fmt_rate(rows: int | None, seconds: float | None) -> str:
    if not rows or not seconds:
        return "-"
    return f"{rows / seconds / 1e6:6.2f} M"


def print_phases(phases: dict[str, Phase], duck_s: float | None) -> None:
    print(
        f"\n{'phase':<28}{'median s':>10}{'cpu s':>8}{'rows/s':>12}{'x duckdb':>10}"
        f"{'peak RSS MB':>13}"
    )
    for p in phases.values():
        if not p.seconds:
            continue
        ratio = f"{p.median / duck_s:8.1f}x" if duck_s and p.median is not None else "-"
        print(
            f"{p.name:<28}{_fmt_s(p.median):>10}{_fmt_s(p.median_cpu):>8}"
            f"{_fmt_rate(p.rows, p.median):>12}"
            f"{ratio:>10}{p.rss_after_mb:>13.0f}"
        )


def print_storage(storage: dict[str, int], clients: int, stages: int, rows: int) -> None:
    total = sum(storage.values())
    print(
        f"\nPostgres storage added by the run: {total / 1e6:.1f} MB = {total / clients:.0f} B "
        f"per client = {total / clients / stages:.1f} B per client per stage = "
        f"{total / rows:.1f} B per input row"
    )
    for table, size in sorted(storage.items(), key=lambda kv: -kv[1]):
        if size:
            print(
                f"  {table:<24}{size / 1e6:10.1f} MB {size / clients / stages:8.1f} B/client/stage"
            )


def print_counts(named: dict[str, Counts]) -> None:
    """Outcomes as rows, stages as columns; DuckDB's number, with every disagreement marked."""
    duck = named["duckdb"]
    stages = list(duck)
    width = max(10, *(len(s) + 1 for s in stages))
    print(f"\n{'outcome (duckdb)':<20}" + "".join(f"{s[: width - 1]:>{width}}" for s in stages))
    for outcome in OUTCOMES:
        cells = []
        for s in stages:
            values = {n: c.get(s, {}).get(outcome) for n, c in named.items()}
            mark = "" if len(set(values.values())) == 1 else "*"
            cells.append(f"{mark}{duck[s][outcome]}")
        print(f"{outcome:<20}" + "".join(f"{c:>{width}}" for c in cells))
    print("(* = tracer or pandas differ; see mismatches)")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, default=BENCH / "data")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions; medians reported")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--skip-tracer", action="store_true", help="reference counts only")
    parser.add_argument("--skip-pandas", action="store_true", help="e.g. at 5M clients")
    args = parser.parse_args(argv)

    run_dir = ensure_run(args.data_dir, args.clients, args.seed)
    load_before = os.getloadavg()[0]
    manifest = run_dir / "manifest.yaml"
    rows = dataset_rows(run_dir)
    n_stages = len(read_manifest(run_dir).stages)
    stage_names = [s.name for s in read_manifest(run_dir).stages]
    stage_rows = sum(rows[s] for s in stage_names)
    trace_rows = sum(rows.values()) - stage_rows
    total_rows = stage_rows + trace_rows
    print(
        f"run {run_dir}: {args.clients:,} clients, {stage_rows:,} stage rows + "
        f"{trace_rows:,} traceability rows; repeat {args.repeat}; "
        f"database {'DATABASE_URL' if os.environ.get('DATABASE_URL') else 'throwaway'}",
        flush=True,
    )

    phases = {
        "migrate": Phase("tracer migrations"),
        "load": Phase("tracer load_manifest"),
        "ingest": Phase("tracer ingest+classify", rows=total_rows),
        "reconcile": Phase("tracer reconciliation read"),
        "duckdb": Phase("duckdb counts", rows=total_rows),
        "pandas": Phase("pandas counts", rows=total_rows),
    }
    named: dict[str, Counts] = {}
    tracer_runs: list[TracerResult] = []
    tracer_error: str | None = None
    if not args.skip_tracer:
        try:
            api = tracer_api()
            for rep in range(args.repeat):
                tracer_runs.append(run_tracer(api, manifest, rep, phases))
                print(
                    f"tracer repetition {rep + 1}: {phases['ingest'].seconds[-1]:.2f} s", flush=True
                )
        except Exception as exc:
            traceback.print_exc()
            tracer_error = f"{type(exc).__name__}: {exc}"
        if tracer_runs and tracer_runs[-1].counts is not None:
            named["tracer"] = tracer_runs[-1].counts
            if any(r.counts != tracer_runs[-1].counts for r in tracer_runs):
                tracer_error = "tracer's counts differ between repetitions"

    for _ in range(args.repeat):
        duck = timed(phases["duckdb"], lambda: duckdb_counts(run_dir))
    named["duckdb"] = duck
    if not args.skip_pandas:
        for _ in range(args.repeat):
            pand = timed(phases["pandas"], lambda: pandas_counts(run_dir))
        named["pandas"] = pand

    designed_ok: bool | None = None
    generation = run_dir / "generation.json"
    if generation.exists():
        expected = expected_counts(json.loads(generation.read_text()))
        wrong = [
            (s, o, duck[s][o], n)
            for s, row in expected.items()
            for o, n in row.items()
            if duck[s][o] != n
        ]
        designed_ok = not wrong
        for s, o, got, want in wrong:
            print(f"designed anomaly mismatch: {s}.{o}: duckdb {got}, injected {want}")

    duck_s = phases["duckdb"].median
    print_phases(phases, duck_s)
    if tracer_runs and tracer_runs[-1].steps:
        steps = tracer_runs[-1].steps
        print("\ntracer ingest+classify breakdown (last repetition): ", end="")
        print(", ".join(f"{what} {sec:.2f}" for what, sec in steps))
    if tracer_runs and tracer_runs[-1].storage:
        print_storage(tracer_runs[-1].storage, args.clients, n_stages, total_rows)
    last = tracer_runs[-1] if tracer_runs else None
    if last is not None and last.latency_ms:
        print("\nlookups in-process (ms)       p50       p99")
        for name, lat in last.latency_ms.items():
            print(f"  {name:<26}{lat['p50']:>8.2f}  {lat['p99']:>8.2f}")
        print(
            f"peak memory: client {phases['ingest'].rss_after_mb:.0f} MB (this process, after "
            f"ingest+classify), Postgres backend {last.server_peak_mb} MB"
        )
        print(
            f"delete_run: {last.delete_s:.2f} s; storage left by the run afterwards: "
            f"{(last.storage_after_delete or 0) / 1e6:.1f} MB"
        )
    print_counts(named)
    mismatches = diff_counts(named)
    for m in mismatches:
        print("mismatch:", json.dumps(m))
    if designed_ok is not None:
        print(f"DuckDB matches the injected anomalies of generation.json: {designed_ok}")
    if tracer_error:
        print(f"tracer error: {tracer_error}")

    tracer_s = phases["ingest"].median
    tracer_cpu = phases["ingest"].median_cpu
    storage = sum(tracer_runs[-1].storage.values()) if tracer_runs else None
    # Against every reference that ran: DuckDB always, pandas unless --skip-pandas.
    counts_equal = "tracer" in named and not mismatches and tracer_error is None
    summary: dict[str, Any] = {
        "clients": args.clients,
        "stage_rows": stage_rows,
        "trace_rows": trace_rows,
        "repeat": args.repeat,
        "tracer_s": _round(tracer_s),
        "tracer_reconciliation_s": _round(phases["reconcile"].median),
        "tracer_migrate_s": _round(phases["migrate"].median),
        "duckdb_s": _round(duck_s),
        "pandas_s": _round(phases["pandas"].median),
        "ratio": _round(tracer_s / duck_s) if tracer_s and duck_s else None,
        # CPU seconds, less sensitive than wall time to other work on a shared machine:
        # tracer's process and its Postgres backends, against DuckDB's reference.
        "tracer_cpu_s": _round(tracer_cpu) if tracer_cpu else None,
        "tracer_postgres_cpu_s": _round(last.server_cpu_s) if last else None,
        "duckdb_cpu_s": _round(phases["duckdb"].median_cpu),
        "cpu_ratio": (
            _round((tracer_cpu + (last.server_cpu_s or 0)) / phases["duckdb"].median_cpu)
            if tracer_cpu and last and phases["duckdb"].median_cpu
            else None
        ),
        "counts_equal": counts_equal,
        "reference_equal": (
            not diff_counts({"duckdb": named["duckdb"], "pandas": named["pandas"]})
            if "pandas" in named
            else None
        ),
        "designed_ok": designed_ok,
        "storage_bytes": storage,
        "storage_b_per_client": _round(storage / args.clients) if storage else None,
        "storage_b_per_client_stage": (
            _round(storage / args.clients / n_stages) if storage else None
        ),
        "storage_b_per_row": _round(storage / total_rows) if storage else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "tracer_peak_rss_mb": round(phases["ingest"].rss_after_mb, 1) if tracer_runs else None,
        "server_peak_mb": last.server_peak_mb if last else None,
        "lookup_ms": last.latency_ms if last else None,
        "delete_s": _round(last.delete_s) if last else None,
        "steps": {what: round(sec, 2) for what, sec in last.steps} if last else None,
        # Other work on this machine slows every phase: the 1-minute load average before
        # and after, next to the figures it qualifies.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    if not counts_equal:
        summary["mismatches"] = mismatches
    if tracer_error:
        summary["tracer_error"] = tracer_error
    print(json.dumps(summary))
    return 0 if counts_equal else 1


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


if __name__ == "__main__":
    sys.exit(main())
