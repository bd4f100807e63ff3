"""The Swagger UI docs page, in a real browser: it loads offline and renders the API.

The app is served over real HTTP (werkzeug, in a thread) and opened in Debian's
chromium through Playwright. No request may fail, nothing may log a console error,
and the page must show the operations, not Swagger UI's "Unable to render" notice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.harness import serving

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 10_000

RECONCILIATION = "/api/v1/runs/{run_id}/reconciliation"
CREATE_RUN = "/api/v1/runs"
METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


@pytest.fixture
def base_url(app: Any) -> Iterator[str]:
    """The app behind a real HTTP server on a free port, for the length of one test."""
    with serving(app) as url:
        yield url


@contextmanager
def _chromium() -> Iterator[Any]:
    """Debian's chromium under Playwright; a missing browser fails the test (no skip)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the docs page test needs Debian's chromium "
            "(run: apt-get install chromium)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a dev dependency
        pytest.fail("playwright is missing: pip install -e '.[dev]' (or pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def _opblock(page: Any, method: str, path: str) -> Any:
    """The operation block for `method path` (Swagger UI's .opblock-<method>)."""
    return page.locator(f".opblock.opblock-{method}").filter(
        has=page.locator(f'.opblock-summary-path[data-path="{path}"]')
    )


def test_docs_page_renders_the_api_offline(base_url: str, tmp_path: Path) -> None:
    with _chromium() as browser:
        _check_docs_page(
            browser.new_page(viewport={"width": 1280, "height": 900}), base_url, tmp_path
        )


def _check_docs_page(page: Any, base_url: str, tmp_path: Path) -> None:
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on(
        "console",
        lambda m: m.type == "error" and problems.append(f"console: {m.text} [{m.location['url']}]"),
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} ({r.failure})"))
    page.on(
        "response",
        lambda r: (
            r.status >= 400 and problems.append(f"HTTP {r.status}: {r.request.method} {r.url}")
        ),
    )
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))

    page.goto(f"{base_url}/api/v1/docs", wait_until="load")

    # Swagger UI says so in the page, not in the console, when it cannot render the
    # document (e.g. a version field it does not support): check that first.
    ui = page.locator(".swagger-ui").first
    ui.wait_for()
    page.wait_for_function(
        "() => document.querySelector('.swagger-ui .info .title')"
        " || document.querySelector('.swagger-ui .version-pragma')"
        " || document.querySelector('.swagger-ui .errors-wrapper')"
    )
    pragma = page.locator(".swagger-ui .version-pragma")
    assert pragma.count() == 0, f"Swagger UI cannot render the document: {pragma.inner_text()}"

    title = page.locator(".swagger-ui .info .title")
    assert title.inner_text().startswith("tracer"), title.inner_text()

    reconciliation = _opblock(page, "get", RECONCILIATION)
    create_run = _opblock(page, "post", CREATE_RUN)
    reconciliation.locator(".opblock-summary").wait_for(state="visible")
    create_run.locator(".opblock-summary").wait_for(state="visible")
    spec = page.request.get(f"{base_url}/api/v1/openapi.json").json()
    operations = sorted(
        (m.upper(), path) for path, item in spec["paths"].items() for m in item if m in METHODS
    )
    shown = sorted(
        (
            block.locator(".opblock-summary-method").inner_text().strip(),
            block.locator(".opblock-summary-path").get_attribute("data-path"),
        )
        for block in page.locator(".opblock").all()
    )
    assert shown == operations  # every operation is listed, by method and path

    # Expand one operation: its responses, the 404 and the shared Error schema (every status
    # is listed: the document has no catch-all `default` response).
    reconciliation.locator(".opblock-summary").first.click()
    not_found = reconciliation.locator('tr.response[data-code="404"]')
    not_found.wait_for(state="visible")
    assert "No such run" in not_found.inner_text()
    not_found.locator('button[data-name="model"]').click()
    not_found.locator(".model-box").filter(has_text="Error").first.wait_for(state="visible")

    page.wait_for_load_state("networkidle")  # let late requests (e.g. a favicon) land
    shot = tmp_path / "docs.png"
    page.screenshot(path=str(shot), full_page=True)

    assert not problems, "the docs page had problems:\n" + "\n".join(problems)
    outside = [u for u in requested if not u.startswith(base_url)]
    assert not outside, f"the docs page reached outside the app: {outside}"
    # What a reader sees: the title and the expanded operation are on screen, not hidden.
    for visible in (title, not_found):
        box = visible.bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] > 0
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
