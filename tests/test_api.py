"""The REST API against real Postgres and real Redis, every response checked against its
OpenAPI document; jobs run through real rq queues by SimpleWorker in burst mode."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.openapi_check import CheckedClient
from tests.pipelines import RunBuilder
from tracer.queries.journey import journey
from tracer.queries.reconciliation import reconciliation

TRACE = {"reported": True, "stage": "b", "reason_column": "reason"}


def manifest_body(path: Path) -> dict[str, Any]:
    """The manifest as a client posts it: paths made absolute (they are under the data root)."""
    data = json.loads(path.read_text())
    for part in ("outputs", "traceability"):
        data["run"][part] = {n: str(path.parent / p) for n, p in data["run"][part].items()}
    return data


@pytest.fixture
def posted(app: Any, data_root: Path, engine: Any, run_jobs: Any) -> tuple[CheckedClient, str]:
    """A two-stage run (25 clients, 5 dropped with a reason, 5 orphaned), posted and worked."""
    build = RunBuilder(data_root, engine)
    path = build.manifest(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={
            "a": [{"client_id": i} for i in range(1, 26)],
            "b": [{"client_id": i} for i in range(1, 16)],
        },
        trace={"t": (TRACE, [{"client_id": i, "reason": "excluded"} for i in range(16, 21)])},
        run_id="api-run",
    )
    client = CheckedClient(app)
    created = client.post("/api/v1/runs", json=manifest_body(path))
    assert created.status_code == 202, created.get_json()
    body = created.get_json()
    assert body["run_id"] == "api-run" and len(body["job_ids"]["ingest"]) == 3
    assert client.get("/api/v1/runs/api-run").get_json()["status"] == "queued"
    run_jobs()
    return client, "api-run"


def test_post_then_every_answer(posted: tuple[CheckedClient, str], engine: Any) -> None:
    client, run = posted
    detail = client.get(f"/api/v1/runs/{run}").get_json()
    assert detail["status"] == "classified"
    assert {d["name"]: d["status"] for d in detail["datasets"]} == {
        "a": "ingested", "b": "ingested", "t": "ingested"
    }  # fmt: skip
    assert detail["totals"]["orphaned"] == 5

    # The same answers as the core (and so as the CLI's `reconciliation` and `journey --json`).
    with engine.connect() as conn:
        assert client.get(f"/api/v1/runs/{run}/reconciliation").get_json() == reconciliation(
            conn, run
        )
        assert client.get(f"/api/v1/runs/{run}/journeys/18").get_json() == journey(conn, run, [18])
    one = client.get(f"/api/v1/runs/{run}/journeys?key=18").get_json()
    assert one["final_outcome"] == "dropped" and one["key"] == {"client_id": 18}

    # One shape for a run and a key in every answer.
    history = client.get("/api/v1/history/22?pipeline=p-api-run").get_json()
    assert [(h["run"], h["key"], h["final_outcome"]) for h in history["items"]] == [
        (_run(detail), {"client_id": 22}, "orphaned")
    ]
    assert history["next"] is None and history["next_url"] is None
    assert client.get("/api/v1/history?key=22&pipeline=p-api-run").get_json() == history

    lost = client.get(f"/api/v1/runs/{run}/gap_cells/lost/keys?limit=2").get_json()
    # Each key explains itself: its cause, the reasons there, its final outcome, its journey.
    assert lost["items"] == [
        {
            "key": {"client_id": i},
            "stage": "b",
            "outcome": "orphaned",
            "reasons": [],
            "final_outcome": "orphaned",
            "journey_url": f"http://localhost/api/v1/runs/{run}/journeys/{i}",
        }
        for i in (21, 22)
    ]
    assert lost["run"] == _run(detail) and lost["total"] == 5
    rest = client.get(lost["next_url"].removeprefix("http://localhost")).get_json()
    assert rest["items"][0]["key"] == {"client_id": 23}
    followed = client.get(rest["items"][0]["journey_url"].removeprefix("http://localhost"))
    assert followed.get_json()["final_outcome"] == "orphaned"

    pipelines = client.get("/api/v1/pipelines?limit=500").get_json()["items"]
    mine = next(p for p in pipelines if p["name"] == "p-api-run")
    assert {"name": "p-api-run", "runs": 1}.items() <= mine.items()

    listed = client.get("/api/v1/runs?status=classified&pipeline=p-api-run").get_json()
    assert [{k: v for k, v in r.items() if k != "figures"} for r in listed["items"]] == [
        _run(detail)
    ]
    assert listed["next"] is None
    figures = listed["items"][0]["figures"]
    assert figures["anomalies"]["orphaned"] == 5 and figures["gap"] == 5
    assert figures["failed_conditions"] == ["5 orphaned keys", "gap 5", "reporting gap 5"]
    assert figures["distance"] == 5 + 5 + 5


def _run(detail: dict[str, Any]) -> dict[str, Any]:
    """The run object every answer carries: the run's detail without its datasets and totals."""
    return {k: v for k, v in detail.items() if k not in ("datasets", "totals")}


def test_every_list_pages_by_keyset_and_refuses_foreign_tokens(
    app: Any, data_root: Path, engine: Any, run_jobs: Any
) -> None:
    build = RunBuilder(data_root, engine)
    client = CheckedClient(app)
    for n in range(3):
        path = build.manifest([{"name": "a"}], {"a": [{"client_id": 5}]}, run_id=f"paged-{n}")
        assert client.post("/api/v1/runs", json=manifest_body(path)).status_code == 202
    run_jobs()
    pages, url = [], "/api/v1/runs?limit=2&status=classified"
    while url:
        page = client.get(url).get_json()
        pages.append([r["run_id"] for r in page["items"] if r["run_id"].startswith("paged-")])
        url = page["next_url"] and page["next_url"].removeprefix("http://localhost")
    assert [r for p in pages for r in p] == ["paged-2", "paged-1", "paged-0"]
    history = client.get("/api/v1/history/5?limit=1").get_json()
    assert [h["run"]["run_id"] for h in history["items"]] == ["paged-2"]
    second = client.get(history["next_url"].removeprefix("http://localhost")).get_json()
    assert [h["run"]["run_id"] for h in second["items"]] == ["paged-1"]
    # A token belongs to its list: another list, or another filter, refuses it.
    foreign = client.get(f"/api/v1/runs?next={history['next']}")
    assert foreign.status_code == 400 and "another list" in foreign.get_json()["error"]


def test_anomalies_paginate_and_stream_as_csv(posted: tuple[CheckedClient, str]) -> None:
    client, run = posted
    seen, token = [], None
    while True:
        url = f"/api/v1/runs/{run}/anomalies?outcome=orphaned&stage=b&limit=2"
        page = client.get(url + (f"&next={token}" if token else "")).get_json()
        seen += [item["key"]["client_id"] for item in page["items"]]
        if (token := page["next"]) is None:
            break
    assert sorted(seen) == [21, 22, 23, 24, 25]
    response = client.get(f"/api/v1/runs/{run}/anomalies?outcome=dropped&format=csv")
    assert response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == [
        "stage", "client_id", "rows_in", "rows_out", "rows_dropped", "extra_rows", "outcome",
        "final_outcome", "reasons",
    ]  # fmt: skip
    assert sorted(int(r[1]) for r in rows[1:]) == [16, 17, 18, 19, 20]
    assert rows[1][-3:] == ["dropped", "dropped", "t: excluded (1 row, reported)"]


def test_errors_share_one_body(posted: tuple[CheckedClient, str]) -> None:
    client, run = posted
    cases = [
        ("GET", "/api/v1/runs/nope/reconciliation", 404),
        ("GET", f"/api/v1/runs/{run}/journeys/999", 404),
        ("GET", f"/api/v1/runs/{run}/journeys/abc", 400),
        ("GET", f"/api/v1/runs/{run}/anomalies?outcome=vanished", 400),
        ("GET", f"/api/v1/runs/{run}/anomalies?outcome=passed", 400),
        ("GET", f"/api/v1/runs/{run}/anomalies?outcome=orphaned&next=%%%", 400),
        ("GET", "/api/v1/jobs/no-such-job", 404),
        ("GET", "/api/v1/jobs/abc%20def", 404),  # an id rq itself would refuse
        ("GET", f"/api/v1/runs/{run}/compare/nope", 404),
        ("GET", f"/api/v1/runs/{run}/compare/{run}/keys?a=vanished&b=targeted", 400),
        ("GET", f"/api/v1/runs/{run}/gap_cells/nowhere/keys", 400),
        ("GET", f"/api/v1/runs/{run}/journeys?client=18", 400),
        ("GET", "/api/v1/runs?since=yesterday", 400),
        ("GET", "/api/v1/pipelines/nope/runs/latest", 404),
    ]
    for method, url, status in cases:
        response = client.request(method, url)
        body = response.get_json()
        assert response.status_code == status, (url, body)
        assert body["ok"] is False and body["status"] == status and body["errors"], url
    # Outside the documented paths too (so no document to check it against).
    unknown = client.client.get("/api/v1/no-such-thing")
    assert unknown.status_code == 404 and unknown.get_json()["ok"] is False


def test_bad_manifests_are_refused_before_anything_is_queued(
    app: Any, data_root: Path, api_config: Any
) -> None:
    from redis import Redis
    from rq import Queue

    from workers.queues import queue_names

    client = CheckedClient(app)
    queue = Queue(queue_names(api_config)[0], connection=Redis.from_url(api_config.redis_url))
    bad_yaml = client.post("/api/v1/runs", data="pipeline: [", content_type="application/yaml")
    assert bad_yaml.status_code == 400 and "YAML" in bad_yaml.get_json()["error"]
    missing = yaml.safe_dump(
        {
            "pipeline": {"name": "p", "key": ["id"], "stages": [{"name": "a"}]},
            "run": {"id": "r", "outputs": {"a": "nowhere.parquet"}},
        }
    )
    refused = client.post("/api/v1/runs", data=missing, content_type="application/yaml")
    assert refused.status_code == 422  # well-formed, but not a manifest that can be run
    assert any("run.outputs.a" in e for e in refused.get_json()["errors"])
    wrong_type = client.post("/api/v1/runs", data="x", content_type="text/plain")
    assert wrong_type.status_code == 415
    assert queue.count == 0


def test_job_status_and_a_failed_job(app: Any, data_root: Path, engine: Any, run_jobs: Any) -> None:
    """Bad input fails its job without retries and marks the dataset and the run failed."""
    build = RunBuilder(data_root, engine)
    trace = [{"client_id": 1, "stage": "nowhere", "reason": "r"}]
    path = build.manifest(
        stages=[{"name": "a"}],
        outputs={"a": [{"client_id": 1}]},
        trace={
            "t": ({"reported": True, "stage_column": "stage", "reason_column": "reason"}, trace)
        },
        run_id="api-fails",
    )
    client = CheckedClient(app)
    jobs = client.post("/api/v1/runs", json=manifest_body(path)).get_json()["job_ids"]
    run_jobs()
    statuses = [client.get(f"/api/v1/jobs/{j}").get_json() for j in jobs["ingest"]]
    assert sorted(s["status"] for s in statuses) == ["failed", "finished"]
    failed = next(s for s in statuses if s["status"] == "failed")
    assert "'nowhere'" in failed["error"]
    # The failed dataset cancels the classification instead of leaving it waiting forever.
    assert client.get(f"/api/v1/jobs/{jobs['classify']}").get_json()["status"] == "canceled"
    detail = client.get("/api/v1/runs/api-fails").get_json()
    assert detail["status"] == "failed" and "'nowhere'" in detail["error"]
    assert {d["name"]: d["status"] for d in detail["datasets"]} == {"a": "ingested", "t": "failed"}


def test_delete_and_openapi_document(posted: tuple[CheckedClient, str]) -> None:
    client, run = posted
    spec = client.client.get("/api/v1/openapi.json").get_json()
    assert sorted(spec["components"]["schemas"]["Error"]["required"]) == [
        "error",
        "errors",
        "ok",
        "status",
    ]
    assert "Manifest" in spec["components"]["schemas"]
    assert client.delete(f"/api/v1/runs/{run}").status_code == 204
    assert client.get(f"/api/v1/runs/{run}").status_code == 404


def test_without_redis_jobs_run_in_the_serving_process(
    database_url: str, data_root: Path, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from api import create_app
    from tracer.config import Config
    from workers import jobs

    monkeypatch.setenv("DATABASE_URL", database_url)
    jobs.engine.cache_clear()
    app = create_app(Config(database_url=database_url, data_roots=(data_root,)))
    client = CheckedClient(app)
    assert client.get("/api/v1/health").get_json()["redis"]["configured"] is False
    build = RunBuilder(data_root, engine)
    path = build.manifest([{"name": "a"}], {"a": [{"client_id": 7}]}, run_id="in-process")
    job_ids = client.post("/api/v1/runs", json=manifest_body(path)).get_json()["job_ids"]
    for _ in range(100):
        if client.get("/api/v1/runs/in-process").get_json()["status"] == "classified":
            break
        time.sleep(0.1)
    assert client.get(f"/api/v1/jobs/{job_ids['classify']}").get_json()["status"] == "finished"
    answer = client.get("/api/v1/runs/in-process/journeys/7").get_json()
    assert answer["final_outcome"] == "targeted"
    jobs.engine.cache_clear()
