"""The pages, in a real browser, over the demo run: what a support person or an engineer sees.

One demo run (the bank client list, tracer.demo) is ingested once for the module and the
app is served by werkzeug on loopback; Debian's chromium, driven by Playwright, reads
every figure from the DOM and compares it with the demo's answer key. No page may log a
console error, fail a request or reach outside the app.
"""

from __future__ import annotations

import csv
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from api.web.flow import LEAVING
from api.web.words import STAGE_COLUMNS
from tests.harness import serving
from tests.pipelines import RunBuilder
from tests.test_docs_page import CHROMIUM, CHROMIUM_ARGS
from tracer.config import Config, parse_tokens
from tracer.demo import AnswerKey, answer_key, build_demo
from tracer.manifest import load_manifest
from tracer.store import ingest_manifest, submit_run

TIMEOUT_MS = 10_000
READ_TOKEN = "web-read-" + uuid.uuid4().hex


def digits(text: str) -> int:
    """The number a cell shows: '1,229' -> 1229, '-16,804' -> -16804, '+7 rows' -> 7."""
    match = re.search(r"[-+−]?[\d,]+", text)
    assert match, f"no number in {text!r}"
    return int(match.group().replace(",", "").replace("−", "-"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> tuple[str, AnswerKey]:
    """The demo run, built and ingested once for the module: (run id, answer key)."""
    folder = tmp_path_factory.mktemp("web-demo")
    run_id = f"web-demo-{uuid.uuid4().hex[:6]}"
    manifest = build_demo(folder, run_id)
    ingest_manifest(engine, load_manifest(manifest))
    return run_id, answer_key(folder)


@pytest.fixture(scope="module")
def web_config(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Config:
    return Config(database_url=database_url, data_roots=(tmp_path_factory.mktemp("roots"),))


@pytest.fixture(scope="module")
def base_url(web_config: Config, engine: Engine) -> Iterator[str]:
    """The app with no tokens configured (pages open, like the API), on a real server."""
    from api import create_app

    with serving(create_app(web_config)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the page tests need Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


class Watched:
    """A page whose problems (console errors, failed or outside requests) fail the test."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1366, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.base_url = base_url
        self.problems: list[str] = []
        page = self.page
        page.on(
            "console",
            lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"),
        )
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("dialog", lambda d: self.problems.append(f"dialog: {d.message}"))
        page.on(
            "requestfailed",
            lambda r: (
                r.failure != "net::ERR_ABORTED"
                and self.problems.append(f"failed: {r.url} ({r.failure})")
            ),
        )
        page.on(
            "response",
            lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"),
        )
        page.on(
            "request",
            lambda r: (
                not r.url.startswith(base_url) and self.problems.append(f"outside the app: {r.url}")
            ),
        )

    def goto(self, path: str) -> Any:
        self.page.goto(self.base_url + path, wait_until="load")
        return self.page

    def close(self) -> None:
        self.context.close()
        assert not self.problems, "the pages had problems:\n" + "\n".join(self.problems)


@pytest.fixture
def web(browser: Any, base_url: str) -> Iterator[Watched]:
    watched = Watched(browser, base_url)
    yield watched
    watched.close()


def test_runs_page_lists_the_run_with_its_badge(web: Watched, demo: tuple[str, AnswerKey]) -> None:
    run_id, answer = demo
    page = web.goto("/")
    row = page.locator(f'tr[data-run="{run_id}"]')
    assert row.locator("[data-reconciles]").get_attribute("data-reconciles") == "no"
    assert row.locator(".badge").inner_text().strip().endswith("does not reconcile")
    for column in ("entered", "targeted", "traced", "gap", "reporting_gap"):
        shown = digits(row.locator(f'[data-col="{column}"]').inner_text())
        assert shown == answer.summary[column], column

    # Filters, and broken first: the run stays listed under its own pipeline and status only.
    page.get_by_label("Pipeline").select_option("bank_campaign")
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"status=failed"))
    assert page.locator(f'tr[data-run="{run_id}"]').count() == 0
    page.get_by_label("Status").select_option("classified")
    page.get_by_label("Order").select_option("broken")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"order=broken"))
    assert page.locator(f'tr[data-run="{run_id}"]').count() == 1


def test_run_page_shows_every_stage_and_outcome(web: Watched, demo: tuple[str, AnswerKey]) -> None:
    run_id, answer = demo
    page = web.goto(f"/runs/{run_id}")
    page.locator('#flow[data-drawn="1"] svg').wait_for()

    # The diagram: one node per way of leaving, extra rows and appeared clients, per stage.
    nodes = page.eval_on_selector_all(
        "#flow [data-node]",
        "els => Object.fromEntries(els.map(e =>"
        " [e.dataset.node, [e.dataset.value, e.textContent]]))",
    )
    for stage, planted in answer.keys.items():
        for kind, _ in (*LEAVING, ("appeared", "")):
            expected = len(planted.get(kind, ()))
            node = nodes.get(f"{kind}:{stage}")
            if expected == 0:
                assert node is None, (stage, kind)
            else:
                assert node is not None, (stage, kind)
                assert int(node[0]) == expected and f"{expected:,}" in node[1], (stage, kind)
        extra = answer.rows[stage].get("multiplied_extra_rows", 0)
        node = nodes.get(f"extra_rows:{stage}")
        assert (int(node[0]) if node else 0) == extra, stage
    assert digits(nodes["targeted"][1]) == answer.summary["targeted"]
    assert f"{answer.summary['entered']:,}" in nodes["stage:selection"][1]

    # The same figures as text: the table under the diagram has one row per link.
    links = page.eval_on_selector_all(
        "#flow path[data-source]",
        "els => els.map(e => [e.dataset.source, e.dataset.target, Number(e.dataset.value)])",
    )
    rows = page.eval_on_selector_all(
        "#flow-table tbody tr",
        "els => els.map(e => [e.dataset.source, e.dataset.target,"
        " Number(e.querySelector('[data-value]').dataset.value)])",
    )
    assert sorted(links) == sorted(rows) and links

    # The per-stage table: every outcome the answer key lists, zeros included.
    cells = page.eval_on_selector_all(
        "table.stages td[data-outcome]",
        "els => els.map(e => [e.dataset.stage, e.dataset.outcome, e.textContent])",
    )
    shown = {(stage, outcome): digits(text) for stage, outcome, text in cells}
    for stage, planted in answer.keys.items():
        for outcome in STAGE_COLUMNS:
            if outcome != "passed":  # the answer key lists every outcome but the normal ones
                assert shown[stage, outcome] == len(planted.get(outcome, ())), (stage, outcome)
    assert shown["selection", "entered"] == answer.summary["entered"]
    for stage, flags in answer.rows.items():
        extra = page.locator(f'tr[data-stage="{stage}"] [data-extra-rows]')
        assert (digits(extra.inner_text()) if extra.count() else 0) == flags.get(
            "multiplied_extra_rows", 0
        )
        row = page.locator(f'table.flags tr[data-stage="{stage}"]')
        assert digits(row.locator('[data-flag="duplicate_rows"]').inner_text()) == flags.get(
            "duplicate_rows", 0
        )
        null_keys = digits(row.locator('[data-flag="null_key_output"]').inner_text())
        null_keys += digits(row.locator('[data-flag="null_key_traceability"]').inner_text())
        assert null_keys == flags.get("null_key", 0)
        grain = digits(row.locator('[data-flag="grain_violation"]').inner_text())
        assert grain == len(answer.keys[stage].get("grain_violation", ()))

    # Both views of the gap, each summed from its cells.
    assert (
        digits(page.locator('[data-view="reporting"]').first.inner_text())
        == (answer.summary["reporting_gap"])
    )
    assert digits(page.locator('td[data-view="all"]').inner_text()) == answer.summary["gap"]


def test_the_diagram_follows_routed_splits_and_merges(web: Watched, build: RunBuilder) -> None:
    """docs/semantics.md#splits-and-merges: 10 reaches no branch (orphaned at both), 3 is
    lost at the merge; every edge's figure is exact from the stored per-stage counts."""
    clients = [{"client_id": i} for i in range(1, 11)]
    run_id = build.run(
        stages=[
            {"name": "src"},
            {"name": "split", "split": "route"},
            {"name": "email", "parents": ["split"]},
            {"name": "sms", "parents": ["split"]},
            {"name": "merge", "parents": ["email", "sms"]},
        ],
        outputs={
            "src": clients,
            "split": clients,
            "email": clients[:5],
            "sms": clients[5:9],
            "merge": [c for c in clients[:9] if c["client_id"] != 3],
        },
    )
    page = web.goto(f"/runs/{run_id}")
    page.locator('#flow[data-drawn="1"]').wait_for()
    links = page.eval_on_selector_all(
        "#flow path[data-source]",
        "els => Object.fromEntries(els.map(e => [e.dataset.source + ' > ' + e.dataset.target,"
        " Number(e.dataset.value)]))",
    )
    assert links == {
        "stage:src > stage:split": 10,
        "stage:split > stage:email": 6,  # 5 routed there, and 10, offered to every branch
        "stage:split > stage:sms": 5,
        "stage:email > orphaned:email": 1,
        "stage:sms > orphaned:sms": 1,
        "stage:email > stage:merge": 5,
        "stage:sms > stage:merge": 4,
        "stage:merge > orphaned:merge": 1,
        "stage:merge > targeted": 8,
    }
    assert "≤" not in page.locator("#flow-table").inner_text()  # no edge is an estimate


def test_an_orphaned_key_opens_its_journey(web: Watched, demo: tuple[str, AnswerKey]) -> None:
    run_id, answer = demo
    page = web.goto(f"/runs/{run_id}")
    page.locator('#flow [data-node="orphaned:exclusions"]').click()  # the diagram's node
    page.wait_for_url(re.compile(r"/anomalies\?outcome=orphaned"))
    assert digits(page.locator("[data-total]").inner_text()) == len(
        answer.keys["exclusions"]["orphaned"]
    )
    first = page.locator("table.keys a.key").first
    key = int(first.inner_text())
    assert key in answer.final["orphaned"]
    first.click()
    page.wait_for_url(re.compile(rf"/runs/{run_id}/clients/{key}$"))
    final = page.locator("[data-final]")
    assert final.get_attribute("data-final") == "orphaned"
    assert "orphaned" in final.inner_text() and "exclusions" in final.inner_text()
    step = page.locator('.timeline [data-stage="exclusions"]')
    assert step.get_attribute("data-outcome") == "orphaned"
    # Its history links back to this run's journey.
    assert page.locator(".history a").first.get_attribute("href").endswith(f"/clients/{key}")


def test_csv_download_has_the_whole_list(web: Watched, demo: tuple[str, AnswerKey]) -> None:
    run_id, answer = demo
    page = web.goto(f"/runs/{run_id}/anomalies?outcome=dropped_unreported")
    assert page.locator("table.keys tbody tr").count() == 100  # one page shown ...
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the whole list as CSV").click()
    with open(download.value.path(), newline="") as f:
        rows = list(csv.DictReader(f))  # ... the whole list downloaded
    assert {int(r["client_id"]) for r in rows} == answer.keys["buffer_update"]["dropped_unreported"]
    assert {r["stage"] for r in rows} == {"buffer_update"}
    assert len(rows) == len(answer.keys["buffer_update"]["dropped_unreported"])


def test_search_finds_a_client_and_a_run(web: Watched, demo: tuple[str, AnswerKey]) -> None:
    run_id, answer = demo
    key = min(answer.keys["buffer_update"]["dropped_unreported"])
    page = web.goto(f"/runs/{run_id}/anomalies")
    box = page.get_by_role("searchbox", name="Client key or run id")
    box.fill(str(key))
    box.press("Enter")
    page.wait_for_url(re.compile(r"/search\?q="))
    hit = page.locator("table.clients tr").filter(has_text=run_id)
    assert "dropped (operational only)" in hit.inner_text()
    hit.locator("a.key").click()
    page.wait_for_url(re.compile(rf"/clients/{key}$"))
    assert page.locator("[data-final]").get_attribute("data-final") == "dropped_unreported"
    assert "trace_buffer" in page.locator("[data-final]").inner_text()
    # The reasons say which source they come from and that reporting does not see them.
    reasons = page.locator('.timeline [data-stage="buffer_update"] table.reasons').inner_text()
    assert "trace_buffer" in reasons and "operational only" in reasons

    box = page.get_by_role("searchbox", name="Client key or run id")
    box.fill(run_id)
    box.press("Enter")
    page.wait_for_url(re.compile(rf"/runs/{run_id}$"))


def test_composite_keys_are_searched_and_linked(web: Watched, build: RunBuilder) -> None:
    rows = [{"branch": "LIS", "client_no": 42}, {"branch": "OPO", "client_no": 42}]
    run_id = build.run(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": rows, "b": rows[1:]},
        key=["branch", "client_no"],
    )
    page = web.goto("/")
    box = page.get_by_role("searchbox", name="Client key or run id")
    box.fill("LIS, 42")
    box.press("Enter")
    page.locator("table.clients a.key", has_text="branch LIS, client_no 42").click()
    page.wait_for_url(re.compile(rf"/runs/{run_id}/clients\?key=LIS&key=42$"))
    assert page.locator("[data-final]").get_attribute("data-final") == "orphaned"


def test_gap_cells_link_to_their_keys(web: Watched, demo: tuple[str, AnswerKey]) -> None:
    run_id, answer = demo
    page = web.goto(f"/runs/{run_id}")
    page.locator('table.cells[data-view="all"] tr[data-cell="lost"] th a').click()
    page.wait_for_url(re.compile(r"/gaps/lost$"))
    keys = {int(k) for k in page.locator("table.keys a.key").all_inner_texts()}
    assert keys == answer.final["orphaned"]  # lost over all sources: no reason anywhere
    page.get_by_role("link", name="The same cell, reporting sources only").click()
    page.wait_for_url(re.compile(r"reporting=1"))
    total = digits(page.locator("[data-total]").inner_text())
    assert total == len(answer.final["orphaned"]) + len(answer.final["dropped_unreported"])


def test_comparison_shows_the_matrix_and_the_keys_of_a_cell(
    web: Watched, build: RunBuilder, engine: Engine
) -> None:
    """A rerun that loses clients 4 and 5 at stage b: the matrix, where they first differ,
    their journeys in both runs, and their history across the two runs."""
    stages = [{"name": "a"}, {"name": "b"}]
    first = build.manifest(
        stages,
        {
            "a": [{"client_id": i} for i in range(1, 7)],
            "b": [{"client_id": i} for i in range(1, 6)],
        },
    )
    run_a = ingest_manifest(engine, load_manifest(first))
    second = build.manifest(
        stages,
        {
            "a": [{"client_id": i} for i in range(1, 7)],
            "b": [{"client_id": i} for i in range(1, 4)],
        },
    )
    document = json.loads(second.read_text())
    document["pipeline"]["name"] = json.loads(first.read_text())["pipeline"]["name"]
    document["run"]["rerun_of"] = run_a
    second.write_text(json.dumps(document))
    run_b = ingest_manifest(engine, load_manifest(second))

    page = web.goto(f"/runs/{run_b}")
    page.get_by_role("link", name="Compare the two runs").click()
    page.wait_for_url(re.compile(rf"/compare/{run_a}/{run_b}$"))
    assert page.locator("[data-changed]").get_attribute("data-changed") == "2"
    matrix = page.eval_on_selector_all(
        "table.matrix td", "els => els.map(e => [e.dataset.a, e.dataset.b, e.textContent.trim()])"
    )
    assert {(a, b): int(n) for a, b, n in matrix if n != "0"} == {
        ("targeted", "targeted"): 3,
        ("targeted", "orphaned"): 2,
        ("orphaned", "orphaned"): 1,
    }
    assert page.locator('table.firsts tr[data-stage="b"] td').inner_text() == "2"
    page.locator('td[data-a="targeted"][data-b="orphaned"] a').click()
    page.wait_for_url(re.compile(r"/keys\?a=targeted&b=orphaned"))
    assert page.locator("table.keys th.key").all_inner_texts() == ["4", "5"]
    page.get_by_role("link", name="in B").first.click()
    page.wait_for_url(re.compile(rf"/runs/{run_b}/clients/4$"))
    assert page.locator("[data-final]").get_attribute("data-final") == "orphaned"
    history = page.locator("table.history tbody tr")

    def row(run_id: str) -> Any:
        return history.filter(has=page.get_by_role("link", name=run_id, exact=True))

    assert "orphaned" in row(run_b).inner_text() and "targeted" in row(run_a).inner_text()
    row(run_a).get_by_role("link", name=run_a, exact=True).click()
    page.wait_for_url(re.compile(rf"/runs/{run_a}/clients/4$"))
    assert page.locator("[data-final]").get_attribute("data-final") == "targeted"


def test_pages_print_data_as_text_never_as_markup(
    web: Watched, build: RunBuilder, engine: Engine
) -> None:
    """A label and key values that look like HTML are shown, not run (autoescape, tojson)."""
    evil = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    path = build.manifest(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": [{"client_id": evil}, {"client_id": "ok"}], "b": [{"client_id": "ok"}]},
        key_types={"client_id": "string"},
    )
    manifest = json.loads(path.read_text())
    manifest["run"]["label"] = evil
    path.write_text(json.dumps(manifest))
    run_id = ingest_manifest(engine, load_manifest(path))
    page = web.goto(f"/runs/{run_id}/anomalies?outcome=orphaned")
    assert page.locator("table.keys a.key").inner_text() == evil
    page.locator("table.keys a.key").click()
    page.wait_for_url(re.compile(r"/clients"))
    assert evil in page.locator("h1").inner_text()
    page = web.goto("/")
    assert evil in page.locator(f'tr[data-run="{run_id}"] .label').inner_text()
    page = web.goto(f"/runs/{run_id}")
    page.locator('#flow[data-drawn="1"]').wait_for()
    assert page.locator("img, main script:not([type]):not([src])").count() == 0


def test_a_running_ingestion_refreshes_by_itself(
    web: Watched, build: RunBuilder, engine: Engine
) -> None:
    path = build.manifest(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": [{"client_id": i} for i in range(10)], "b": [{"client_id": 1}]},
    )
    manifest = load_manifest(path)
    submitted = submit_run(engine, manifest)  # queued: no worker has picked it up
    page = web.goto(f"/runs/{submitted.run_id}")
    assert page.locator('[data-dataset="a"] .status').inner_text() == "pending"
    assert page.locator("#flow").count() == 0
    ingest_manifest(engine, manifest)  # what a worker does; the page is not touched
    page.locator('#flow[data-drawn="1"]').wait_for()
    assert page.locator('[data-node="orphaned:b"]').get_attribute("data-value") == "9"


def test_tokens_are_asked_once_and_kept_in_an_httponly_cookie(
    browser: Any, web_config: Config, demo: tuple[str, AnswerKey]
) -> None:
    from dataclasses import replace

    from api import create_app

    run_id, _ = demo
    config = replace(web_config, api_tokens=parse_tokens(f"read:{READ_TOKEN}"))
    with serving(create_app(config)) as url:
        watched = Watched(browser, url)
        page = watched.goto(f"/runs/{run_id}/anomalies?outcome=orphaned")
        page.wait_for_url(re.compile(r"/login\?next="))
        page.get_by_label("API token").fill("not-a-token")
        page.get_by_role("button", name="Sign in").click()
        assert "not one of this server's tokens" in page.locator("[role=alert]").inner_text()
        page.get_by_label("API token").fill(READ_TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(rf"/runs/{run_id}/anomalies\?outcome=orphaned$"))
        (cookie,) = watched.context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["value"] == READ_TOKEN
        assert page.evaluate("document.cookie") == ""  # scripts cannot read it
        with page.expect_download() as download:  # the download travels with the cookie
            page.get_by_role("link", name="Download the whole list as CSV").click()
        assert Path(download.value.path()).read_text().startswith("stage,client_id")
        # The API itself still wants its bearer header.
        assert page.request.get(f"{url}/api/v1/runs").status == 401
        page.get_by_role("button", name="Forget token").click()
        page.wait_for_url(re.compile(r"/login"))
        assert watched.context.cookies() == []
        watched.goto("/")
        page.wait_for_url(re.compile(r"/login\?next=/$"))
        watched.close()


def test_the_pages_stay_out_of_the_api_document(base_url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/api/v1/openapi.json") as response:
        spec = json.load(response)
    assert all(path.startswith("/api/v1/") for path in spec["paths"])
    assert "web" not in {tag["name"] for tag in spec.get("tags", [])}
