"""How soon is a big run's page usable in a browser?

    python bench/web.py --clients 1000000 [--loads 10]

Ingests the synthetic run (``bench/data/clients-N/``, generated when missing; see
load.py for the database: ``DATABASE_URL`` or a throwaway one), starts ``tracer serve``
(gunicorn, on 127.0.0.1 only) and opens the run page in Debian's chromium through
Playwright, ``--loads`` times after one cold load, each in a fresh browser context (no
cache). For each load it reads the browser's own clock (Navigation Timing, from the
start of navigation):

* ``html``: the page's HTML fully received (responseEnd): the server's work;
* ``interactive``: the later of DOMContentLoaded (every deferred script has run, every
  control works) and the ``tracer:flow-drawn`` mark that api/static/flow.js sets once the
  flow diagram is laid out and drawn: the page is complete and answers clicks;
* ``bytes``: what the page downloaded in all (HTML, CSS, scripts): the page never loads
  per-key data, so this does not grow with the run.

Then one click on the diagram (the orphaned node of a stage) opens the first page of
those keys, timed the same way. The last line is one JSON object for scripts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from common import BENCH, database, ensure_run, tracer_api
from load import ingest_runs, server_tracebacks, tracer_server

from tests.test_docs_page import CHROMIUM, CHROMIUM_ARGS  # common.py put the repo on the path

HOST = "127.0.0.1"
TIMING = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const drawn = performance.getEntriesByName("tracer:flow-drawn")[0];
  const bytes = performance.getEntriesByType("resource")
    .reduce((sum, r) => sum + r.transferSize, nav.transferSize);
  return {html: nav.responseEnd, dom: nav.domContentLoadedEventEnd,
          drawn: drawn ? drawn.startTime : null, bytes: bytes};
}"""


def load_page(browser: Any, url: str, wait_for: str) -> dict[str, float]:
    """One load in a fresh context (nothing cached); its timings in ms, and its bytes."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.goto(url, wait_until="load")
    page.locator(wait_for).wait_for()
    timing = page.evaluate(TIMING)
    context.close()
    ready = max(timing["dom"], timing["drawn"] or 0)
    return {"html": timing["html"], "interactive": ready, "bytes": timing["bytes"]}


def click_through(browser: Any, url: str) -> float:
    """Run page -> click an orphaned node -> the keys' first page interactive, in ms."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.goto(url, wait_until="load")
    page.locator('#flow[data-drawn="1"]').wait_for()
    node = page.locator('#flow [data-kind="orphaned"]').first
    started = time.perf_counter()
    node.click()
    page.wait_for_url("**/anomalies?outcome=orphaned*")
    page.locator("table.keys a.key").first.wait_for()
    elapsed = (time.perf_counter() - started) * 1000
    context.close()
    return elapsed


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 1),
        "max": round(max(values), 1),
        "min": round(min(values), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--loads", type=int, default=10, help="warm loads timed after a cold one")
    parser.add_argument("--data-dir", type=Path, default=BENCH / "data")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        parser.error(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    run_dir = ensure_run(args.data_dir, args.clients, in_child=False)
    manifest = run_dir / "manifest.yaml"
    run_id = yaml.safe_load(manifest.read_text())["run"]["id"]
    api = tracer_api()
    with (
        tempfile.TemporaryDirectory(prefix="tracer_web_") as tmp,
        database("tracer_web") as (url, _shared),
    ):
        from sqlalchemy import create_engine

        engine = create_engine(url)
        api.db.upgrade(engine)
        ingest_runs(api, engine, [(run_id, manifest)])
        engine.dispose()
        log = Path(tmp) / "serve.log"
        with tracer_server(url, run_dir, log) as port, sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            page_url = f"http://{HOST}:{port}/runs/{run_id}"
            drawn = '#flow[data-drawn="1"]'
            cold = load_page(browser, page_url, drawn)
            warm = [load_page(browser, page_url, drawn) for _ in range(args.loads)]
            click = [click_through(browser, page_url) for _ in range(3)]
            browser.close()
        problems = server_tracebacks(log)
    result = {
        "clients": args.clients,
        "run_id": run_id,
        "cold": {k: round(v, 1) for k, v in cold.items()},
        "html_ms": summary([w["html"] for w in warm]),
        "interactive_ms": summary([w["interactive"] for w in warm]),
        "bytes": int(statistics.median(w["bytes"] for w in warm)),
        "click_to_keys_ms": summary(click),
        "server_tracebacks": len(problems),
    }
    print(
        f"run page of {args.clients:,} clients, {args.loads} loads after a cold one:\n"
        f"  HTML received      p50 {result['html_ms']['p50']} ms, max {result['html_ms']['max']}"
        f" ms (cold {result['cold']['html']} ms)\n"
        f"  interactive        p50 {result['interactive_ms']['p50']} ms, max "
        f"{result['interactive_ms']['max']} ms (cold {result['cold']['interactive']} ms)\n"
        f"  downloaded         {result['bytes']:,} bytes\n"
        f"  click -> key list  p50 {result['click_to_keys_ms']['p50']} ms"
    )
    for problem in problems:
        print(problem, file=sys.stderr)
    print(json.dumps(result))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
