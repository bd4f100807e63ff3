"""How fast does the real server answer "where did client X go?" with a big run stored?

    python bench/load.py --clients 1000000 [--concurrency 1,8,32] [--seconds 10] [--runs 1]

Ingests the synthetic run (``bench/data/clients-N/``, generated when missing)
``--runs`` times under different run ids, in this process with the core; then
starts ``tracer serve`` as a separate process (gunicorn, no Redis, no tokens)
and measures it over HTTP on 127.0.0.1 only:

1. client journeys (``GET /api/v1/runs/<run>/journeys/<id>``, random real ids
   of random stored runs) with ``wrk`` at each concurrency: requests/s, p50,
   p99, errors (non-2xx plus socket errors);
2. sequentially, with a keep-alive Python client: the first page of the
   orphaned-clients list and the reconciliation, p50 and p99; a client's history
   across every stored run (random real ids), p50 and p99;
3. batch lookups (``POST /api/v1/runs/<run>/clients/lookup``): ``--lookup-keys`` keys a
   request (the sampled ids, 1% unknown ones among them) as JSON and as a CSV upload,
   from one client, then from two at once: keys answered per second, p50 and p99 per
   request, and a check that every key got its answer.

The database is ``DATABASE_URL`` when set (runs already classified there are
not ingested again, so repeated invocations are fast), otherwise a throwaway
``tracer_load_<pid>`` dropped at the end. The very last line printed is one
JSON object for scripts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow.dataset as pads
import yaml
from common import BENCH, REPO, database, ensure_run, free_port, tracer_api, wait_healthy

HOST = "127.0.0.1"
SAMPLE_IDS = 10_000
SEED = 20261125
WRK_THREADS = 2


# --------------------------------------------------------------------------- data


def sample_client_ids(run_dir: Path, n: int, seed: int = SEED) -> list[int]:
    """Real entering client ids, read from the first stage's files (not derived from the scheme)."""
    table = pads.dataset(run_dir / "data" / "selection", format="parquet").to_table(
        columns=["client_id"]
    )
    ids = table.column("client_id").drop_null().to_numpy()
    rng = np.random.default_rng(seed)
    picked = rng.choice(ids, size=min(n, len(ids)), replace=False)
    return [int(i) for i in picked]


def run_manifests(manifest: Path, runs: int, tmp: Path) -> list[tuple[str, Path]]:
    """(run id, manifest path) for each copy: the original first, then ids suffixed `-loadK`.

    Copies live in `tmp` with absolute paths, so they read the very same files.
    """
    spec = yaml.safe_load(manifest.read_text())
    base_id = spec["run"]["id"]
    out = [(base_id, manifest)]
    for k in range(2, runs + 1):
        copy = json.loads(json.dumps(spec))
        copy["run"]["id"] = f"{base_id}-load{k}"
        for section in ("outputs", "traceability"):
            for name, rel in copy["run"][section].items():
                absolute = str((manifest.parent / rel).resolve())
                copy["run"][section][name] = absolute + ("/" if rel.endswith("/") else "")
        path = tmp / f"manifest-load{k}.yaml"
        path.write_text(yaml.safe_dump(copy, sort_keys=False))
        out.append((copy["run"]["id"], path))
    return out


# --------------------------------------------------------------------------- tracer


def ingest_runs(api: Any, engine: Any, manifests: list[tuple[str, Path]]) -> None:
    """Ingest + classify each copy, skipping run ids already classified (a persistent database)."""
    from sqlalchemy import select

    for run_id, path in manifests:
        with engine.connect() as conn:
            status = conn.execute(
                select(api.runs.c.status).where(api.runs.c.run_id == run_id)
            ).scalar()
        if status == "classified":
            print(f"run {run_id}: already classified, not ingested again", flush=True)
            continue
        started = time.perf_counter()
        api.ingest_manifest(engine, api.load_manifest(path))
        print(f"run {run_id}: ingested in {time.perf_counter() - started:.1f} s", flush=True)


# --------------------------------------------------------------------------- server


@contextmanager
def tracer_server(database_url: str, data_dir: Path, log: Path, workers: int) -> Iterator[int]:
    """`tracer serve` in its own process until the block ends; yields its port once healthy."""
    port = free_port(HOST)
    env = {k: v for k, v in os.environ.items() if k != "TRACER_API_TOKENS"}
    # As deployed: with Redis the API runs several gunicorn workers (jobs go to the queue).
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    env.update(DATABASE_URL=database_url, TRACER_DATA_ROOTS=str(data_dir.resolve()))
    cmd = [sys.executable, "-m", "tracer", "serve", "--host", HOST, "--port", str(port)]
    cmd += ["--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        try:
            wait_healthy(f"http://{HOST}:{port}/api/v1/health", proc, timeout=60)
        except RuntimeError as exc:
            raise RuntimeError(f"tracer serve: {exc}:\n{_tail(log)}") from None
        yield port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # gunicorn: graceful stop of master and workers
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def server_tracebacks(log: Path) -> list[str]:
    """Tracebacks the server logged: a JSON log line's `exc_info`, or a plain-text block (from
    before logging was set up) running until the first unindented line."""
    found: list[str] = []
    block: list[str] | None = None
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"exc_info"' in line:
            try:
                found.append(json.loads(line)["exc_info"])
            except (ValueError, KeyError):
                found.append(line)
        elif line.startswith("Traceback"):
            block = [line]
        elif block is not None:
            block.append(line)
            if line and not line[0].isspace():
                found.append("\n".join(block))
                block = None
    return found


def get(port: int, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    """One GET (on `conn` when given, keep-alive); the whole body is read, as a client would."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


# --------------------------------------------------------------------------- load


LUA = """\
-- generated by bench/load.py: random real client ids of random stored runs
local runs = {%(runs)s}
local ids = {%(ids)s}
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end
function init(args)
  math.randomseed(seed * 7919 + os.time())
end
function request()
  local run = runs[math.random(#runs)]
  local id = ids[math.random(#ids)]
  return wrk.format("GET", "/api/v1/runs/" .. run .. "/journeys/" .. id)
end
"""


def write_lua(path: Path, run_ids: list[str], client_ids: list[int]) -> Path:
    runs = ", ".join(json.dumps(quote(r, safe="")) for r in run_ids)
    ids = ",\n".join(
        ", ".join(f'"{i}"' for i in client_ids[j : j + 10]) for j in range(0, len(client_ids), 10)
    )
    path.write_text(LUA % {"runs": runs, "ids": ids})
    return path


@dataclass
class LoadResult:
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS_MS[unit]


def parse_wrk(text: str, concurrency: int) -> LoadResult:
    """Requests/s, the 50% and 99% lines of --latency, non-2xx responses and socket errors."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text):
        errors += int(m.group(1))
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    ):
        errors += sum(int(g) for g in m.groups())
    total = re.search(r"(\d+) requests in", text)
    return LoadResult(concurrency, rps, p50, p99, errors, int(total.group(1)) if total else 0)


def run_wrk(port: int, lua: Path, concurrency: int, seconds: int) -> LoadResult:
    """wrk at `concurrency` connections for `seconds` (bounded: wrk stops itself)."""
    cmd = ["wrk", "-t", str(min(WRK_THREADS, concurrency)), "-c", str(concurrency)]
    cmd += ["-d", f"{seconds}s", "--timeout", "5s", "--latency", "-s", str(lua)]
    cmd += [f"http://{HOST}:{port}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0 or "Requests/sec" not in done.stdout:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return parse_wrk(done.stdout, concurrency)


def ensure_wrk() -> None:
    """Debian's wrk, installed through apt when missing (as root, like the rest of this box)."""
    if shutil.which("wrk"):
        return
    print("wrk not found: apt-get install -y wrk", flush=True)
    if subprocess.run(["apt-get", "install", "-y", "wrk"], check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)


@dataclass
class Sequential:
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


def sequential(port: int, path: str | list[str], requests: int, budget_s: float) -> Sequential:
    """`requests` GETs one after another on one keep-alive connection (stops after `budget_s`);
    several paths are asked in turn."""
    paths = [path] if isinstance(path, str) else path
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    times: list[float] = []
    errors = 0
    deadline = time.monotonic() + budget_s
    try:
        for i in range(requests):
            path = paths[i % len(paths)]
            started = time.perf_counter()
            status, body = get(port, path, conn)
            times.append((time.perf_counter() - started) * 1e3)
            if status != 200:
                errors += 1
                if errors == 1:
                    print(f"{path}: HTTP {status}: {body[:500]!r}", file=sys.stderr)
            if time.monotonic() > deadline:
                break
    finally:
        conn.close()
    return Sequential(_pct(times, 50), _pct(times, 99), errors, len(times))


def _pct(values: list[float], p: int) -> float:
    """Linear-interpolated percentile, so p99 of 200 samples is not just the maximum."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def warm_up(port: int, run_ids: list[str], client_ids: list[int]) -> None:
    """A few sequential journeys: opens the server's connections and fails fast on a 4xx/5xx."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        for i in range(50):
            run = run_ids[i % len(run_ids)]
            path = f"/api/v1/runs/{quote(run, safe='')}/journeys/{client_ids[i]}"
            status, body = get(port, path, conn)
            if status != 200:
                raise RuntimeError(f"GET {path}: HTTP {status}: {body[:1000]!r}")
    finally:
        conn.close()


@dataclass
class Lookup:
    body: str
    clients: int
    keys_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    keys: int


def batch_lookup(
    port: int,
    run_id: str,
    client_ids: list[int],
    keys: int,
    requests: int,
    csv_body: bool,
    clients: int = 1,
) -> Lookup:
    """`requests` POSTs of `keys` keys each (1% of them unknown), from `clients` keep-alive
    connections at once: keys answered per second of wall time, and each request's time.
    An answer that is not a 200 or misses a key counts as an error."""
    ids = [str(i) for i in client_ids[: keys - keys // 100]]
    ids += [str(-n) for n in range(1, keys - len(ids) + 1)]  # no client has a negative id
    if csv_body:
        body, kind = ("client_id\n" + "\n".join(ids) + "\n").encode(), "text/csv"
        path = f"/api/v1/runs/{quote(run_id, safe='')}/clients/lookup?format=csv"
    else:
        body, kind = json.dumps({"keys": ids}).encode(), "application/json"
        path = f"/api/v1/runs/{quote(run_id, safe='')}/clients/lookup"

    def one_client(count: int) -> list[tuple[int, bytes, float]]:
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        try:
            return [_post(conn, path, body, kind) for _ in range(count)]
        finally:
            conn.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = [answer for part in pool.map(one_client, [requests // clients] * clients)
                for answer in part]  # fmt: skip
    elapsed = time.perf_counter() - started
    # Every answer is checked once the clock has stopped: parsing 10,000 answers is the
    # client's work, and in this one Python process it would hold up the next request.
    errors = 0
    for status, answer, _ in done:
        answered = (
            answer.count(b"\n") - 1
            if csv_body
            else len(json.loads(answer)["items"])
            if status == 200
            else 0
        )
        if status != 200 or answered != len(ids):
            errors += 1
            print(f"lookup: HTTP {status}, {answered} answers: {answer[:300]!r}")
    times = [took for _, _, took in done]
    return Lookup(
        "csv" if csv_body else "json",
        clients,
        len(ids) * len(times) / elapsed,
        _pct(times, 50),
        _pct(times, 99),
        errors,
        len(times),
        len(ids),
    )


def _post(
    conn: http.client.HTTPConnection, path: str, body: bytes, kind: str
) -> tuple[int, bytes, float]:
    """(status, body, ms): the server may close an idle keep-alive connection: then again."""
    for attempt in (1, 2):
        started = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": kind})
            response = conn.getresponse()
            answer = response.read()
            return response.status, answer, (time.perf_counter() - started) * 1e3
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            conn.close()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- main


def _server_workers(log: Path) -> int:
    return log.read_text(errors="replace").count("Booting worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated connections")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per level")
    parser.add_argument("--runs", type=int, default=1, help="copies of the run stored")
    parser.add_argument("--requests", type=int, default=200, help="sequential anomaly/reconc. GETs")
    parser.add_argument("--data-dir", type=Path, default=BENCH / "data")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--lookup-keys", type=int, default=10_000, help="keys a batch lookup")
    parser.add_argument("--lookups", type=int, default=20, help="batch lookups of each body")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.runs < 1 or not levels or min(levels) < 1:
        parser.error("--runs and every --concurrency level must be >= 1")

    ensure_wrk()
    run_dir = ensure_run(args.data_dir, args.clients, in_child=False)
    client_ids = sample_client_ids(run_dir, SAMPLE_IDS)
    api = tracer_api()
    journeys: list[LoadResult] = []
    with (
        tempfile.TemporaryDirectory(prefix="tracer_load_") as tmp_name,
        database("tracer_load") as (
            url,
            shared,
        ),
    ):
        tmp = Path(tmp_name)
        print(
            f"run {run_dir}: {args.clients:,} clients, {args.runs} run(s) stored; database "
            f"{'DATABASE_URL' if shared else url.rsplit('/', 1)[1]}; {os.cpu_count()} CPUs "
            "shared by wrk, the server and Postgres",
            flush=True,
        )
        engine = api.db.make_engine(api.Config(database_url=url))
        try:
            api.db.upgrade(engine)
            manifests = run_manifests(run_dir / "manifest.yaml", args.runs, tmp)
            ingest_runs(api, engine, manifests)
        finally:
            engine.dispose()
        run_ids = [run_id for run_id, _ in manifests]
        lua = write_lua(tmp / "journey.lua", run_ids, client_ids)
        log = Path(tempfile.gettempdir()) / f"tracer_load_{os.getpid()}_server.log"
        try:
            with tracer_server(url, args.data_dir, log, args.workers) as port:
                print(f"server on {HOST}:{port}, {_server_workers(log)} gunicorn worker(s)")
                warm_up(port, run_ids, client_ids)
                for c in levels:
                    journeys.append(run_wrk(port, lua, c, args.seconds))
                    print(f"  wrk -c {c}: {journeys[-1].rps:.0f} req/s", flush=True)
                run = quote(run_ids[0], safe="")
                budget = max(60.0, args.seconds * 6.0)
                anomalies = sequential(
                    port,
                    f"/api/v1/runs/{run}/anomalies?outcome=orphaned&limit=100",
                    args.requests,
                    budget,
                )
                rec = sequential(port, f"/api/v1/runs/{run}/reconciliation", args.requests, budget)
                hist = sequential(
                    port,
                    [f"/api/v1/history/{i}" for i in client_ids[: args.requests]],
                    args.requests,
                    budget,
                )
                lookups = [
                    batch_lookup(
                        port, run_ids[0], client_ids, args.lookup_keys, args.lookups, csv_body, n
                    )
                    for n in (1, 2)
                    for csv_body in (False, True)
                ]
        finally:
            traces = server_tracebacks(log) if log.exists() else []
            for trace in traces:
                print(f"server traceback:\n{trace}", file=sys.stderr)
            if log.exists() and not traces:
                log.unlink()
            elif log.exists():
                print(f"server log kept: {log}", file=sys.stderr)

    header = ("concurrency", 11), ("req/s", 10), ("p50 ms", 10), ("p99 ms", 10), ("errors", 8)
    print("\n" + "".join(f"{name:>{width}}" for name, width in header) + f"{'requests':>10}")
    for r in journeys:
        print(
            f"{r.concurrency:>11}{r.rps:>10.1f}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}"
            f"{r.errors:>8}{r.requests:>10}"
        )
    sequentials = (
        ("anomalies (orphaned, first 100)", anomalies),
        ("reconciliation", rec),
        (f"history ({args.runs} runs)", hist),
    )
    for name, s in sequentials:
        print(
            f"{name:<32} p50 {s.p50_ms:8.2f} ms  p99 {s.p99_ms:8.2f} ms  "
            f"({s.requests} sequential, {s.errors} errors)"
        )
    for lk in lookups:
        name = f"batch lookup, {lk.body}, {lk.clients} client(s)"
        print(
            f"{name:<32} {lk.keys_per_s:,.0f} keys/s; {lk.keys:,} keys a request: "
            f"p50 {lk.p50_ms:.1f} ms, p99 {lk.p99_ms:.1f} ms ({lk.requests} requests, "
            f"{lk.errors} errors)"
        )
    summary = {
        "clients": args.clients,
        "runs": args.runs,
        "seconds": args.seconds,
        "journey": [
            {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(r).items()}
            for r in journeys
        ],
        "anomalies_p50_ms": round(anomalies.p50_ms, 3),
        "anomalies_p99_ms": round(anomalies.p99_ms, 3),
        "anomalies_errors": anomalies.errors,
        "reconciliation_p50_ms": round(rec.p50_ms, 3),
        "reconciliation_p99_ms": round(rec.p99_ms, 3),
        "reconciliation_errors": rec.errors,
        "history_p50_ms": round(hist.p50_ms, 3),
        "history_p99_ms": round(hist.p99_ms, 3),
        "history_errors": hist.errors,
        "lookup": [
            {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(lk).items()}
            for lk in lookups
        ],
    }
    print(json.dumps(summary))
    failed = any(r.errors for r in [*journeys, *lookups]) or anomalies.errors or rec.errors
    failed = failed or hist.errors
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
