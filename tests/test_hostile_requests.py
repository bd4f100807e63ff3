"""Hostile requests against the API (issue #10): every one is refused with the one JSON error
body, the status the team's convention gives it, a message naming the fault, and (for
writes) a database left exactly as it was. Never a 500.

The corpus is generated here: forged pagination tokens, huge and negative numbers, control
characters in paths and queries, bodies nested 100,000 levels deep, YAML alias bombs, bodies
just over the limit, 10,000-character URLs and keys, huge headers, wrong methods and media
types. The Flask app runs on the test database and real Redis; the cases only a real HTTP
server can show (its own 414/431, a body refused before it is read) run against `tracer
serve` under gunicorn.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.conftest import REDIS_URL
from tests.harness import serving, tracer_serve
from tests.pipelines import RunBuilder
from tracer.config import RequestLimits

LIMITS = RequestLimits()
REPR = re.compile(r"\{'|\['|\('|\bb'|\bb\"")
"""What a Python repr of a dict, list, tuple or bytes looks like."""
TRACE = {"reported": True, "stage": "b", "reason_column": "reason"}


# -- helpers ----------------------------------------------------------------------------


def refused(response: Any, status: int, *words: str) -> dict[str, Any]:
    """The response is the one error body with `status`, and its messages name `words`."""
    assert response.mimetype == "application/json", (status, response.get_data()[:300])
    body = response.get_json()
    assert response.status_code == status, (status, body)
    assert set(body) == {"ok", "status", "error", "errors"}, body
    assert body["ok"] is False and body["status"] == status, body
    assert isinstance(body["error"], str) and body["error"], body
    assert body["errors"] and all(isinstance(e, str) and e for e in body["errors"]), body
    said = " ".join([body["error"], *body["errors"]])
    for word in words:
        assert word in said, (word, body)
    assert not REPR.search(said), f"a Python repr in {body}"
    return body


def snapshot(engine: Engine) -> tuple[Any, ...]:
    """What a refused write must leave as it was: runs, pipelines, versions, datasets."""
    with engine.connect() as conn:
        return (
            conn.execute(text("SELECT run_id, status, label FROM runs ORDER BY pk")).all(),
            conn.execute(text("SELECT id, name FROM pipelines ORDER BY id")).all(),
            conn.execute(text("SELECT count(*) FROM pipeline_versions")).scalar_one(),
            conn.execute(text("SELECT count(*) FROM datasets")).scalar_one(),
            conn.execute(text("SELECT count(*) FROM openlineage_events")).scalar_one(),
        )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def token_of(values: Any) -> str:
    return b64(json.dumps(values).encode())


def unpack(token: str) -> list[Any]:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def nested_json(depth: int, kind: str = "[") -> bytes:
    if kind == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def manifest_body(data_root: Path, engine: Engine, run_id: str) -> dict[str, Any]:
    """A valid manifest, paths absolute under the data root, that nothing has posted yet."""
    path = RunBuilder(data_root, engine).manifest(
        [{"name": "a"}], {"a": [{"client_id": 1}, {"client_id": 2}]}, run_id=run_id
    )
    body = json.loads(path.read_text())
    body["run"]["outputs"] = {n: str(path.parent / p) for n, p in body["run"]["outputs"].items()}
    return body


@pytest.fixture
def world(app: Any, data_root: Path, engine: Engine) -> dict[str, Any]:
    """Two classified runs (each: 25 clients, 5 dropped with a reason, 5 orphaned) and the
    `next` token of every list that has two pages."""
    build = RunBuilder(data_root, engine)
    tag = uuid.uuid4().hex[:6]
    runs = []
    for n in (1, 2):
        runs.append(
            build.run(
                stages=[{"name": "a"}, {"name": "b"}],
                outputs={
                    "a": [{"client_id": i} for i in range(1, 26)],
                    "b": [{"client_id": i} for i in range(1, 16)],
                },
                trace={"t": (TRACE, [{"client_id": i, "reason": "x"} for i in range(16, 21)])},
                run_id=f"hostile-{tag}-{n}",
            )
        )
    client = app.test_client()
    a, b = runs
    lists = {
        "runs": "/api/v1/runs?limit=1",
        "runs_classified": "/api/v1/runs?limit=1&status=classified",
        "anomalies": f"/api/v1/runs/{a}/anomalies?outcome=orphaned&limit=1",
        "anomalies_b": f"/api/v1/runs/{b}/anomalies?outcome=orphaned&limit=1",
        "anomalies_dropped": f"/api/v1/runs/{a}/anomalies?outcome=dropped&limit=1",
        "gap_keys": f"/api/v1/runs/{a}/gap_cells/lost/keys?limit=1",
        "history": "/api/v1/history/22?limit=1",
        "pipelines": "/api/v1/pipelines?limit=1",
    }
    tokens = {}
    for name, url in lists.items():
        page = client.get(url)
        assert page.status_code == 200, (url, page.get_json())
        tokens[name] = page.get_json()["next"]
        assert tokens[name], f"{url} has one page only"
    return {"client": client, "runs": runs, "lists": lists, "tokens": tokens}


# -- pagination tokens -------------------------------------------------------------------


def test_forged_pagination_tokens(world: dict[str, Any]) -> None:
    client, lists, tokens = world["client"], world["lists"], world["tokens"]
    real = unpack(tokens["anomalies"])
    digest = real[0]
    garbage = [
        "W10",  # base64 of `[]`, the 500
        "%%%",
        "!!!!",
        "not base64 at all",
        b64(b"\xff\xfe\x00"),  # not UTF-8
        b64(b"[" * 5000),  # JSON nested past the decoder's recursion limit
        b64(b'{"a": 1}'),
        b64(b"42"),
        token_of(["abc", "x"]),
        token_of([1]),
        token_of([None, None]),
        token_of([1e30, "x"]),
        token_of([digest]),  # this list's digest, no sort key
        token_of([digest, *(None for _ in real[1:])]),
        token_of([digest, *(1e30 for _ in real[1:])]),
        token_of([digest, *("a\u0000b" for _ in real[1:])]),  # NUL inside
        token_of([digest, *([1] for _ in real[1:])]),
        token_of([digest, *real[1:], "one more"]),
        token_of([digest, *(2**70 for _ in real[1:])]),
        "A" * 6000,  # long, under the URL limit
    ]
    for forged in garbage:
        for name in ("runs", "anomalies", "gap_keys", "history", "pipelines"):
            url = f"{lists[name]}&next={forged}"
            refused(client.get(url), 400, "pagination token")


def test_tokens_of_another_list_are_refused(world: dict[str, Any]) -> None:
    client, lists, tokens = world["client"], world["lists"], world["tokens"]
    foreign = {
        "anomalies": ["anomalies_b", "anomalies_dropped", "gap_keys", "runs", "history"],
        "anomalies_b": ["anomalies"],  # the same list of another run
        "gap_keys": ["anomalies", "runs"],  # a gap-cell token on anomalies, and the reverse
        "runs": ["runs_classified", "pipelines", "history", "anomalies"],
        "runs_classified": ["runs"],  # the same list with another filter
        "history": ["runs", "anomalies"],
        "pipelines": ["runs", "history"],
    }
    for name, others in foreign.items():
        for other in others:
            url = f"{lists[name]}&next={tokens[other]}"
            refused(client.get(url), 400, "pagination token")
    # Each token still works on its own list: the refusals above are about the list.
    for name, url in lists.items():
        assert client.get(f"{url}&next={tokens[name]}").status_code == 200, name


# -- numbers ------------------------------------------------------------------------------


def test_huge_and_negative_numbers(world: dict[str, Any]) -> None:
    client, (run, _) = world["client"], world["runs"]
    for value in ("99999999999999999999", "-1", "0", "1e3", "1.5", "NaN", "", "ten"):
        for url in (
            f"/api/v1/runs?limit={value}",
            f"/api/v1/runs/{run}/anomalies?outcome=orphaned&limit={value}",
            f"/api/v1/history/22?limit={value}",
            f"/api/v1/pipelines?limit={value}",
        ):
            refused(client.get(url), 400, "query.limit")
    for version in ("99999999999999999999", str(2**31)):
        response = client.get(f"/api/v1/pipelines/p-{run}/versions/{version}/runs")
        refused(response, 400, "path parameter version", "2,147,483,647")
    refused(client.get(f"/api/v1/pipelines/p-{run}/versions/{2**31 - 1}/runs"), 404, f"p-{run}")
    # The document says so too: a parameter that fails its schema is a 400, never a 422.
    spec = client.get("/api/v1/openapi.json").get_json()
    for path in ("/api/v1/runs", "/api/v1/pipelines", "/api/v1/history/{key}"):
        assert "400" in spec["paths"][path]["get"]["responses"], path
        assert "422" not in spec["paths"][path]["get"]["responses"], path
    # An offset is not a parameter (pages are keyset): ignored, whatever its size.
    plain = client.get("/api/v1/runs?limit=5").get_json()
    huge = client.get("/api/v1/runs?limit=5&offset=99999999999999999999").get_json()
    assert huge["items"] == plain["items"] and plain["items"]


# -- control characters ----------------------------------------------------------------


CONTROL = ["%00", "%0D%0A", "%0A", "%09", "%1F", "%7F"]


def test_control_characters_in_paths_and_queries(world: dict[str, Any]) -> None:
    client, (run, _) = world["client"], world["runs"]
    for c in CONTROL:
        for url, name in (
            (f"/api/v1/runs/a{c}b", "run_id"),
            (f"/api/v1/runs/a{c}b/anomalies?format=csv&outcome=orphaned", "run_id"),
            (f"/api/v1/runs/a{c}b/reconciliation", "run_id"),
            (f"/api/v1/runs/{run}/journeys/1{c}", "key"),
            (f"/api/v1/runs/{run}/gap_cells/lost{c}/keys", "cell"),
            (f"/api/v1/history/1{c}", "key"),
            (f"/api/v1/jobs/x{c}", "job_id"),
            (f"/api/v1/pipelines/p{c}", "name"),
            (f"/api/v1/runs?pipeline=a{c}", "pipeline"),
            (f"/api/v1/runs?label={c}", "label"),
            (f"/api/v1/runs/{run}/anomalies?outcome=orphaned&stage=b{c}", "stage"),
            (f"/api/v1/runs/{run}/journeys?key=1{c}", "key"),
            (f"/api/v1/lineage?run={run}{c}", "run"),
            (f"/api/v1/nowhere{c}", "the path"),
            (f"/api/v1/runs?x{c}y=1", "query parameter's name"),
        ):
            refused(client.get(url), 400, name, "control character U+00")
    # The pages answer the same refusal as a page, not a 500.
    page = client.get("/runs/a%00b")
    assert page.status_code == 400 and page.mimetype == "text/html"
    assert "control character" in page.get_data(as_text=True)


def test_csv_file_names_are_safe(app: Any, world: dict[str, Any]) -> None:
    """`Content-Disposition` names a CSV after the run: whatever a run id holds, the header
    stays one line with a plain name (a run id with CR/LF cannot even be asked for)."""
    from api.lineage import csv_response

    client, (run, _) = world["client"], world["runs"]
    for run_id in ('a"b;c', "a b", "ünïcode", "a\\b", "..", "a\r\nSet-Cookie: x=1"):
        with app.test_request_context("/api/v1/runs/x/anomalies"):
            response = csv_response("anomalies", [], lambda conn, token: {}, f"{run_id}-orphaned")
        disposition = response.headers["Content-Disposition"]
        name = re.fullmatch(r'attachment; filename="([A-Za-z0-9._-]+)\.csv"', disposition)
        assert name, disposition
    crafted = client.get("/api/v1/runs/a%22%3B%20c/anomalies?outcome=orphaned&format=csv")
    refused(crafted, 404, "not found")
    csv = client.get(f"/api/v1/runs/{run}/anomalies?outcome=orphaned&format=csv")
    assert csv.status_code == 200
    assert csv.headers["Content-Disposition"] == f'attachment; filename="{run}-orphaned.csv"'
    refused(client.get("/api/v1/runs/a%0D%0Ab/anomalies?outcome=orphaned&format=csv"), 400)


# -- bodies --------------------------------------------------------------------------------


def test_deep_bodies_are_refused_before_parsing(
    app: Any, world: dict[str, Any], engine: Engine
) -> None:
    client = world["client"]
    before = snapshot(engine)
    deep = 100_000
    cases = [
        ("/api/v1/runs", nested_json(deep), "application/json", {}),
        ("/api/v1/runs", nested_json(deep, "{"), "application/json", {}),
        ("/api/v1/runs", b"[" * deep, "application/json", {}),  # not even closed
        ("/api/v1/runs", b"[" * deep + b"]" * deep, "application/yaml", {}),
        ("/api/v1/runs", b"{a: " * deep + b"1" + b"}" * deep, "application/yaml", {}),
        ("/api/v1/runs", "".join(f"{'  ' * i}- \n" for i in range(300)).encode(), "text/yaml", {}),
        ("/api/v1/lineage", nested_json(deep), "application/json", {}),
        ("/api/v1/lineage", nested_json(deep), "text/plain", {}),  # read as JSON whatever
        (
            "/api/v1/lineage",
            gzip.compress(nested_json(deep, "{")),
            "application/json",
            {"Content-Encoding": "gzip"},
        ),
    ]
    for url, data, media, headers in cases:
        response = client.post(url, data=data, content_type=media, headers=headers)
        refused(response, 400, "nested more than", "TRACER_MAX_BODY_DEPTH")
    # The limit is exact: a body nested as deep as allowed is read (and found wanting).
    at_limit = nested_json(LIMITS.depth - 1, "{").replace(b"1", b"[1]", 1)
    refused(client.post("/api/v1/runs", data=at_limit, content_type="application/json"), 422)
    over = nested_json(LIMITS.depth, "{").replace(b"1", b"[1]", 1)
    refused(client.post("/api/v1/runs", data=over, content_type="application/json"), 400)
    # Brackets inside strings are text, not nesting.
    text_only = json.dumps({"pipeline": "[" * 10_000, "run": {"id": "{" * 10_000}}).encode()
    refused(client.post("/api/v1/runs", data=text_only, content_type="application/json"), 422)
    assert snapshot(engine) == before


def test_yaml_bombs(world: dict[str, Any], engine: Engine) -> None:
    client = world["client"]
    before = snapshot(engine)
    laughs = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    bombs = [
        "\n".join(laughs),  # 9^12 strings once expanded
        "\n".join([*laughs, "pipeline: *a11", "run: *a11"]),
        "run: &r {id: x, outputs: *r}",  # an alias inside itself: refused by PyYAML
    ]
    for bomb in bombs:
        started = time.monotonic()
        response = client.post("/api/v1/runs", data=bomb, content_type="application/yaml")
        assert time.monotonic() - started < 10, "a YAML bomb was expanded"
        assert response.status_code in (400, 422), response.get_json()
        refused(response, response.status_code)
    expanded = client.post(
        "/api/v1/runs", data="\n".join([*laughs, "pipeline: *a11", "run: *a11"]),
        content_type="application/yaml",
    )  # fmt: skip
    refused(expanded, 422, "aliases")
    assert snapshot(engine) == before


def test_nul_in_a_posted_manifest(world: dict[str, Any], data_root: Path, engine: Engine) -> None:
    client = world["client"]
    before = snapshot(engine)
    body = manifest_body(data_root, engine, f"nul-{uuid.uuid4().hex[:6]}")
    cases = {
        "pipeline.name": lambda b: b["pipeline"].update(name="a\u0000b"),
        "run.label": lambda b: b["run"].update(label="x\u0000"),
        "run.id": lambda b: b["run"].update(id="\u0000"),
        "pipeline.stages.0.name": lambda b: b["pipeline"]["stages"][0].update(name="a\u0000"),
        "run.outputs.a": lambda b: b["run"]["outputs"].update(a="/data/\u0000.parquet"),
    }
    for field, change in cases.items():
        changed = json.loads(json.dumps(body))
        change(changed)
        response = client.post("/api/v1/runs", json=changed)
        refused(response, 422, field, "NUL")
    yaml_text = f'pipeline: {json.dumps(body["pipeline"])}\nrun: {{id: "a", label: "b\\0"}}\n'
    response = client.post("/api/v1/runs", data=yaml_text, content_type="application/yaml")
    refused(response, 422, "run.label", "NUL")
    assert snapshot(engine) == before


def test_nul_in_an_openlineage_event(world: dict[str, Any], engine: Engine) -> None:
    from tests.test_openlineage import DagRun

    client = world["client"]
    before = snapshot(engine)
    event = DagRun().task("select_clients", "START")
    event["job"]["name"] = "campaign.a\u0000"
    refused(client.post("/api/v1/lineage", json=event), 400, "job.name", "NUL")
    zipped = gzip.compress(json.dumps(event).encode())
    answer = client.post("/api/v1/lineage", data=zipped, content_type="application/json",
                         headers={"Content-Encoding": "gzip"})  # fmt: skip
    refused(answer, 400, "job.name", "NUL")
    event["job"]["name"] = "campaign.a\\u0000"  # a backslash, then text: no NUL
    assert client.post("/api/v1/lineage", json=event).status_code == 200
    assert snapshot(engine) == before


def test_oversized_bodies(world: dict[str, Any], data_root: Path, engine: Engine) -> None:
    client = world["client"]
    before = snapshot(engine)
    body = manifest_body(data_root, engine, f"big-{uuid.uuid4().hex[:6]}")

    def padded(size: int) -> bytes:
        """The manifest, its label padded so that the whole body is `size` bytes."""
        empty = json.dumps({**body, "run": {**body["run"], "label": ""}}).encode()
        label = "x" * (size - len(empty))
        data = json.dumps({**body, "run": {**body["run"], "label": label}}).encode()
        assert len(data) == size
        return data

    over = client.post("/api/v1/runs", data=padded(LIMITS.body_bytes + 1),
                       content_type="application/json")  # fmt: skip
    refused(over, 413, f"{LIMITS.body_bytes + 1:,} bytes", "TRACER_MAX_BODY_BYTES")
    # At the limit the body is read; the label is then too long to be a run's label.
    at = client.post("/api/v1/runs", data=padded(LIMITS.body_bytes),
                     content_type="application/json")  # fmt: skip
    refused(at, 422, "run.label")
    as_yaml = client.post(
        "/api/v1/runs", data=padded(LIMITS.body_bytes + 1), content_type="application/yaml"
    )
    refused(as_yaml, 413, "TRACER_MAX_BODY_BYTES")
    # The 52 MB post (a 50 MB label): refused from its Content-Length, unread.
    huge = client.post("/api/v1/runs", data=padded(52_000_000), content_type="application/json")
    refused(huge, 413, "52,000,000 bytes", "TRACER_MAX_BODY_BYTES")
    # OpenLineage events have their own limit, inflated size included.
    event = client.post("/api/v1/lineage", data=b" " * (LIMITS.event_bytes + 1),
                        content_type="application/json")  # fmt: skip
    refused(event, 413, "TRACER_MAX_EVENT_BYTES")
    bomb = gzip.compress(b"{" + b" " * (LIMITS.event_bytes + 1) + b"}")
    assert len(bomb) < 100_000
    inflated = client.post("/api/v1/lineage", data=bomb, content_type="application/json",
                           headers={"Content-Encoding": "gzip"})  # fmt: skip
    refused(inflated, 413, "inflates to more than", "TRACER_MAX_EVENT_BYTES")
    two_members = gzip.compress(b"{}") + bomb  # the bomb in a second gzip member
    inflated = client.post("/api/v1/lineage", data=two_members, content_type="application/json",
                           headers={"Content-Encoding": "gzip"})  # fmt: skip
    refused(inflated, 413, "TRACER_MAX_EVENT_BYTES")
    assert snapshot(engine) == before


def test_wrong_media_types(world: dict[str, Any], data_root: Path, engine: Engine) -> None:
    client = world["client"]
    before = snapshot(engine)
    body = json.dumps(manifest_body(data_root, engine, f"media-{uuid.uuid4().hex[:6]}"))
    for media in ("text/plain", "application/xml", "multipart/form-data; boundary=x",
                  "application/x-www-form-urlencoded", "image/png"):  # fmt: skip
        response = client.post("/api/v1/runs", data=body, content_type=media)
        refused(response, 415, media.split(";")[0], "application/json")
    response = client.post("/api/v1/runs", data=body)
    refused(response, 415, "without a Content-Type")
    # A malformed body of the right type is a 400; a well-formed non-manifest a 422.
    refused(client.post("/api/v1/runs", data="{", content_type="application/json"), 400, "JSON")
    refused(client.post("/api/v1/runs", data="a: [", content_type="application/yaml"), 400, "YAML")
    refused(client.post("/api/v1/runs", json=["a"]), 422, "mapping")
    refused(client.post("/api/v1/runs", json={"pipeline": "x"}), 422, "run")
    assert snapshot(engine) == before


# -- URLs and headers ------------------------------------------------------------------


def test_long_urls_and_keys(world: dict[str, Any]) -> None:
    client, (run, _) = world["client"], world["runs"]
    long = "k" * 10_000
    for url in (
        f"/api/v1/runs/{run}/journeys/{long}",
        f"/api/v1/runs/{run}/journeys?key={long}",
        f"/api/v1/history/{long}",
        f"/api/v1/runs?pipeline={long}",
        f"/api/v1/runs/{long}",
        f"/{long}",
    ):
        refused(client.get(url), 414, "TRACER_MAX_URL_BYTES", f"{LIMITS.url_bytes:,}")
    # Escapes count as sent: 3,000 'é' are 6,000 bytes of UTF-8, 18,000 characters escaped.
    refused(client.get(f"/api/v1/history/{'%C3%A9' * 3000}"), 414, "18,0")
    # Under the limit a long key is an answer, not a refusal of the URL.
    response = client.get(f"/api/v1/runs/{run}/journeys/{'k' * 7_000}")
    assert response.status_code in (400, 404), response.get_json()
    refused(response, response.status_code)
    # ... and a client's journey still says, in words, that it has none.
    refused(client.get(f"/api/v1/runs/{run}/journeys/999"), 404, "client_id=999", run)


def test_huge_headers(world: dict[str, Any]) -> None:
    client = world["client"]
    one = client.get("/api/v1/runs", headers={"X-Padding": "x" * 20_000})
    refused(one, 431, "X-Padding", "TRACER_MAX_HEADER_BYTES")
    many = {f"X-Header-{i}": "y" * 500 for i in range(40)}
    refused(client.get("/api/v1/runs", headers=many), 431, "TRACER_MAX_HEADER_BYTES")
    refused(client.get("/", headers={"X-Padding": "c" * 20_000}), 431, "X-Padding")
    assert client.get("/api/v1/runs", headers={"X-Padding": "x" * 10_000}).status_code == 200


def test_wrong_methods_say_which_are_allowed(app: Any, world: dict[str, Any]) -> None:
    client, (run, _) = world["client"], world["runs"]
    for method, url in (
        ("PUT", "/api/v1/runs"),
        ("PATCH", f"/api/v1/runs/{run}"),
        ("DELETE", "/api/v1/health"),
        ("POST", f"/api/v1/runs/{run}/reconciliation"),
        ("PUT", f"/api/v1/pipelines/p-{run}"),
        ("DELETE", "/api/v1/lineage"),
        ("POST", "/api/v1/openapi.json"),
    ):
        response = client.open(url, method=method)
        adapter = app.url_map.bind("localhost")
        allowed = set(adapter.allowed_methods(url.split("?")[0]))
        refused(response, 405, method, *sorted(allowed))
        assert set(response.headers["Allow"].split(", ")) == allowed, url
    # The pages answer as a page, with the same header.
    page = client.post("/")
    assert page.status_code == 405 and page.mimetype == "text/html" and page.headers["Allow"]


def test_unknown_routes(world: dict[str, Any]) -> None:
    client = world["client"]
    for url in ("/api/v1/nothing", "/api/v2/runs", "/api/v1/runs/x/y/z/w", "/api/"):
        refused(client.get(url), 404, "no such resource", url)
    refused(client.get("/api/v1/jobs/abc%20def"), 404, "job", "abc def")  # rq refuses the id
    page = client.get("/no-such-page")
    assert page.status_code == 404 and page.mimetype == "text/html"


def test_limits_come_from_the_environment() -> None:
    from tracer.config import Config
    from tracer.errors import TracerError

    env = {"TRACER_MAX_BODY_BYTES": "2_000", "TRACER_MAX_URL_BYTES": "512",
           "TRACER_MAX_HEADER_BYTES": "4096", "TRACER_MAX_BODY_DEPTH": "8",
           "TRACER_MAX_EVENT_BYTES": "10000"}  # fmt: skip
    limits = Config.from_env(env).limits
    assert limits == RequestLimits(2000, 10000, 8, 512, 4096)
    assert Config.from_env({}).limits == RequestLimits()
    for bad in ("0", "-5", "1e6", "lots", "²"):
        with pytest.raises(TracerError, match="TRACER_MAX_URL_BYTES"):
            Config.from_env({"TRACER_MAX_URL_BYTES": bad})


def test_configured_limits_apply(api_config: Any, engine: Engine) -> None:
    import dataclasses

    from api import create_app

    small = RequestLimits(body_bytes=2_000, event_bytes=3_000, depth=4, url_bytes=300,
                          header_bytes=2_000)  # fmt: skip
    client = create_app(dataclasses.replace(api_config, limits=small)).test_client()
    refused(client.get("/api/v1/runs?label=" + "x" * 300), 414, "300")
    refused(client.get("/api/v1/runs", headers={"X-A": "a" * 2_000}), 431, "2,000")
    refused(client.post("/api/v1/runs", data=b" " * 2_001, content_type="application/json"), 413)
    refused(client.post("/api/v1/lineage", data=b" " * 3_001), 413, "3,000")
    refused(client.post("/api/v1/runs", data=nested_json(5), content_type="application/json"),
            400, "4 levels")  # fmt: skip
    refused(client.post("/api/v1/runs", data="a: [[[[[1]]]]]", content_type="application/yaml"),
            400, "4 levels")  # fmt: skip


# -- a real HTTP server ----------------------------------------------------------------


@pytest.fixture
def gunicorn(
    database_url: str, engine: Engine, data_root: Path, tmp_path: Path
) -> Iterator[tuple[str, int]]:
    """`tracer serve` (gunicorn) on a free port, on the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACER_")}
    env.update(DATABASE_URL=database_url, REDIS_URL=REDIS_URL,
               TRACER_QUEUE_PREFIX=f"tracer-hostile-{uuid.uuid4().hex[:8]}",
               TRACER_DATA_ROOTS=str(data_root), TRACER_LOG_FORMAT="text")  # fmt: skip
    with tracer_serve(env, tmp_path / "stderr") as (_, port):
        yield "127.0.0.1", port


class _Answer:
    """An HTTP answer read off the socket, shaped like a test-client response for `refused`."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status_code = response.status
        self.headers = response.headers
        self.data = response.read()
        self.mimetype = (response.headers.get("Content-Type") or "").split(";")[0]

    def get_json(self) -> Any:
        return json.loads(self.data)

    def get_data(self) -> bytes:
        return self.data


def _ask(server: tuple[str, int], method: str, url: str, body: Any = None,
         headers: dict[str, str] | None = None, encode_chunked: bool = False,
         ) -> _Answer:  # fmt: skip
    connection = http.client.HTTPConnection(*server, timeout=30)
    try:
        connection.request(method, url, body=body, headers=headers or {},
                           encode_chunked=encode_chunked)  # fmt: skip
        return _Answer(connection.getresponse())
    finally:
        connection.close()


def test_through_werkzeugs_server(app: Any) -> None:
    """The limits hold whatever server runs the app: here Werkzeug's, in a thread."""
    with serving(app) as base:
        host, port = base.removeprefix("http://").split(":")
        server = (host, int(port))
        refused(_ask(server, "GET", "/api/v1/history/" + "k" * 10_000), 414, "TRACER_MAX_URL")
        refused(_ask(server, "GET", "/", headers={"X-A": "a" * 20_000}), 431, "X-A")
        refused(_ask(server, "DELETE", "/api/v1/health"), 405, "DELETE")


def test_through_gunicorn(gunicorn: tuple[str, int], engine: Engine) -> None:
    """What a client on a socket sees: the app's JSON 414/431/413/405 under gunicorn, and
    gunicorn's own refusals, past its hard limits, in the same body."""
    before = snapshot(engine)
    # The app's limit, below gunicorn's: the app's message names the setting.
    app_414 = _ask(gunicorn, "GET", "/api/v1/history/" + "k" * 8_100)
    refused(app_414, 414, "TRACER_MAX_URL_BYTES")
    # Past gunicorn's own request-line limit (8,190 bytes), gunicorn answers, in JSON too.
    server_414 = _ask(gunicorn, "GET", "/api/v1/history/" + "k" * 10_000)
    refused(server_414, 414, "refused by the HTTP server")
    # A 5,000-character key fits the URL: the app answers about the key, not the server.
    key = _ask(gunicorn, "GET", "/api/v1/history/" + "k" * 5_000)
    assert key.status_code not in (414, 431), key.data[:300]
    refused(key, key.status_code)
    app_431 = _ask(gunicorn, "GET", "/api/v1/runs", headers={"X-Padding": "x" * 20_000})
    refused(app_431, 431, "X-Padding", "TRACER_MAX_HEADER_BYTES")
    server_431 = _ask(gunicorn, "GET", "/api/v1/runs", headers={"X-Padding": "x" * 40_000})
    refused(server_431, 431, "refused by the HTTP server")
    wrong = _ask(gunicorn, "PUT", "/api/v1/runs", body=b"{}")
    refused(wrong, 405, "PUT")
    assert set(wrong.headers["Allow"].split(", ")) >= {"GET", "POST"}
    refused(_ask(gunicorn, "GET", "/api/v1/runs/a%00b"), 400, "run_id", "U+0000")
    # A body over the limit is refused from its Content-Length, before a byte of it is read.
    with socket.create_connection(gunicorn, timeout=30) as raw:
        raw.sendall(
            b"POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {LIMITS.body_bytes + 1}\r\n\r\n".encode()
        )
        response = http.client.HTTPResponse(raw)
        response.begin()
        refused(_Answer(response), 413, "TRACER_MAX_BODY_BYTES")
    # A chunked body (no Content-Length) is cut where it passes the limit; one whose chunks
    # are malformed is a 400, not the server's exception as a 500.
    chunks = (b"[" + b" " * (LIMITS.body_bytes // 2) for _ in range(3))
    json_type = {"Content-Type": "application/json"}
    chunked = _ask(gunicorn, "POST", "/api/v1/runs", body=chunks, headers=json_type,
                   encode_chunked=True)  # fmt: skip
    refused(chunked, 413, "TRACER_MAX_BODY_BYTES")
    garbled = _ask(gunicorn, "POST", "/api/v1/runs", body=b"{" * 40_000,
                   headers={**json_type, "Transfer-Encoding": "chunked"})  # fmt: skip
    refused(garbled, 400, "could not be read")
    deep = _ask(gunicorn, "POST", "/api/v1/runs", body=nested_json(100_000),
                headers={"Content-Type": "application/json"})  # fmt: skip
    refused(deep, 400, "TRACER_MAX_BODY_DEPTH")
    assert snapshot(engine) == before
