"""Pipeline versions: a changed definition is a new version, old runs keep theirs, a changed
key is refused; the registry's API; migration 0003 carrying old pipelines over. Real Postgres,
real Redis, every response checked against the served OpenAPI document."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, text

from tests.openapi_check import CheckedClient
from tests.pipelines import RunBuilder
from tracer import db
from tracer.manifest import parse_manifest
from tracer.pipelines import pipeline_detail, pipeline_lookup, register_pipeline

STAGES = [{"name": "a"}, {"name": "b"}]
ROWS = {"a": [{"client_id": i} for i in (1, 2, 3)], "b": [{"client_id": i} for i in (1, 2)]}
TRACE = {"t": ({"reported": True, "stage": "b", "reason_column": "reason"}, [])}


class Poster:
    """Posts runs of one pipeline (a name of the test's own) and works the queues."""

    def __init__(self, client: CheckedClient, root: Path, engine: Engine, run_jobs: Any) -> None:
        self.client = client
        self.build = RunBuilder(root, engine)
        self.name = f"camp-{uuid.uuid4().hex[:8]}"
        self.run_jobs = run_jobs

    def body(
        self, run_id: str, stages: list[dict[str, Any]] = STAGES, **kwargs: Any
    ) -> dict[str, Any]:
        outputs = kwargs.pop("outputs", ROWS)
        path = self.build.manifest(stages, outputs, run_id=f"{self.name}-{run_id}", **kwargs)
        data = json.loads(path.read_text())
        data["pipeline"]["name"] = self.name
        for part in ("outputs", "traceability"):
            data["run"][part] = {n: str(path.parent / p) for n, p in data["run"][part].items()}
        return data

    def post(self, body: dict[str, Any], status: int = 202) -> Any:
        response = self.client.post("/api/v1/runs", json=body)
        assert response.status_code == status, response.get_json()
        self.run_jobs()
        return response.get_json()

    def detail(self) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/pipelines/{self.name}")
        assert response.status_code == 200, response.get_json()
        return response.get_json()


@pytest.fixture
def poster(app: Any, data_root: Path, engine: Engine, run_jobs: Any) -> Poster:
    return Poster(CheckedClient(app), data_root, engine, run_jobs)


def _versions(detail: dict[str, Any]) -> list[tuple[int, list[str], list[str]]]:
    """(version, stages, run ids) per version."""
    return [(v["version"], v["stages"], v["run_ids"]) for v in detail["versions"]]


def test_a_changed_definition_is_a_new_version_and_old_runs_keep_theirs(poster: Poster) -> None:
    p, client = poster, poster.client
    first = p.post(p.body("r1"))["run_id"]
    second = p.post(p.body("r2"))["run_id"]  # the same definition: the same version
    detail = p.detail()
    assert _versions(detail) == [(1, ["a", "b"], [second, first])]
    assert detail["latest_version"] == 1 and detail["runs"] == 2

    three = [*STAGES, {"name": "c"}]
    outputs = {**ROWS, "c": [{"client_id": 1}]}
    third = p.post(p.body("r3", three, outputs=outputs))["run_id"]
    detail = p.detail()
    assert _versions(detail) == [(1, ["a", "b"], [second, first]), (2, ["a", "b", "c"], [third])]
    v1, v2 = detail["versions"]
    assert [s["name"] for s in v1["spec"]["stages"]] == ["a", "b"] and v2["key"] == ["client_id"]
    assert (v1["runs"], v2["runs"]) == (2, 1)
    listed = client.get("/api/v1/pipelines?limit=500").get_json()
    assert listed.keys() == {"items", "next", "next_url"}
    mine = next(item for item in listed["items"] if item["name"] == p.name)
    assert mine["latest_version"] == 2 and mine["stages"] == ["a", "b", "c"] and mine["runs"] == 3

    # The old runs still answer: their journeys, and a client's history across versions.
    journey = client.get(f"/api/v1/runs/{first}/journeys/3").get_json()
    assert [s["stage"] for s in journey["stages"]] == ["a", "b"]
    assert journey["final_outcome"] == "orphaned"
    history = client.get(f"/api/v1/history/1?pipeline={p.name}").get_json()
    assert [h["run"]["run_id"] for h in history["items"]] == [third, second, first]

    # A manifest naming the pipeline gets the latest version.
    by_name = p.body("r4", three, outputs=outputs)
    by_name["pipeline"] = p.name
    fourth = p.post(by_name)["run_id"]
    assert _versions(p.detail())[1][2] == [fourth, third]

    # Deleting the newest runs rolls nothing back, silently or otherwise: versions stay.
    for run in (fourth, third):
        assert client.delete(f"/api/v1/runs/{run}").status_code == 204
    detail = p.detail()
    assert detail["latest_version"] == 2 and _versions(detail)[1] == (2, ["a", "b", "c"], [])
    assert client.get(f"/api/v1/runs/{first}/journeys/3").status_code == 200


def test_each_versions_runs_page_by_keyset(poster: Poster) -> None:
    p, client = poster, poster.client
    runs = [p.post(p.body(f"r{n}"))["run_id"] for n in range(3)]
    runs_url = p.detail()["versions"][0]["runs_url"]
    url = runs_url.removeprefix("http://localhost") + "?limit=2"
    seen = []
    while url:
        page = client.get(url).get_json()
        assert page["pipeline"] == p.name and page["version"] == 1
        seen += [r["run_id"] for r in page["items"]]
        url = page["next_url"] and page["next_url"].removeprefix("http://localhost")
    assert seen == runs[::-1]
    missing = client.get(f"/api/v1/pipelines/{p.name}/versions/9/runs")
    assert missing.status_code == 404 and "no version 9" in missing.get_json()["error"]
    assert client.get("/api/v1/pipelines/no-such-pipeline").status_code == 404


def test_a_changed_key_is_refused_and_nothing_is_stored(poster: Poster, api_config: Any) -> None:
    from redis import Redis
    from rq import Queue

    from workers.queues import queue_names

    p, client = poster, poster.client
    rows = {s: [{"branch": "LIS", **r} for r in rs] for s, rs in ROWS.items()}
    keyed = {"key": ["branch", "client_id"], "outputs": rows}
    p.post(p.body("r1", **keyed))
    queue = Queue(queue_names(api_config)[0], connection=Redis.from_url(api_config.redis_url))
    queue.empty()
    for change, field in (
        ({"key": ["client_id"], "outputs": rows}, "pipeline.key"),
        ({"key": ["client_id", "branch"], "outputs": rows}, "pipeline.key"),
        ({**keyed, "key_types": {"client_id": "string"}}, "pipeline.key_types.client_id"),
    ):
        body = p.body("r2", **change)
        refused = client.post("/api/v1/runs", json=body)
        assert refused.status_code == 409, refused.get_json()
        error = refused.get_json()
        assert "changes the key of version 1" in error["error"]
        assert [e.split(":")[0] for e in error["errors"]] == [field]
        assert client.get(f"/api/v1/runs/{body['run']['id']}").status_code == 404
        assert queue.count == 0
    assert [v["version"] for v in p.detail()["versions"]] == [1]
    # Declaring a type where none was declared changes the key too: an undeclared type
    # comes from each run's data, so the old runs may hold another.
    same_types = p.body("r3", **{**keyed, "key_types": {"branch": "string"}})
    assert client.post("/api/v1/runs", json=same_types).status_code == 409


def test_delete_a_pipeline_only_once_no_run_uses_it(poster: Poster) -> None:
    p, client = poster, poster.client
    runs = [p.post(p.body(f"r{n}"))["run_id"] for n in range(2)]
    refused = client.delete(f"/api/v1/pipelines/{p.name}")
    assert refused.status_code == 409
    body = refused.get_json()
    assert all(repr(r) in body["error"] for r in runs) and len(body["errors"]) == 2
    for run in runs:
        assert client.delete(f"/api/v1/runs/{run}").status_code == 204
    assert client.delete(f"/api/v1/pipelines/{p.name}").status_code == 204
    assert client.get(f"/api/v1/pipelines/{p.name}").status_code == 404
    assert client.delete(f"/api/v1/pipelines/{p.name}").status_code == 404
    # The name is free again, for any key.
    assert p.post(p.body("again", key=["client_id"]))["run_id"]
    assert [v["version"] for v in p.detail()["versions"]] == [1]


def _race(engine: Engine, pipeline: Any) -> list[dict[str, Any]]:
    """Two transactions register the same definition; the second starts before the first ends."""
    found: list[dict[str, Any]] = []
    with engine.begin() as first:
        found.append(register_pipeline(first, pipeline))

        def second() -> None:
            with engine.begin() as conn:
                found.append(register_pipeline(conn, pipeline))

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # waiting for `first` to commit
    thread.join(10)
    return found


def test_concurrent_runs_with_a_new_definition_make_one_version(
    engine: Engine, data_root: Path
) -> None:
    """The second registration waits for the first and finds its pipeline, then its version."""
    name = f"race-{uuid.uuid4().hex[:8]}"
    build = RunBuilder(data_root, engine)
    definitions = []
    for stages, outputs in ((STAGES, ROWS), ([*STAGES, {"name": "c"}], {**ROWS, "c": ROWS["b"]})):
        path = build.manifest(stages, outputs)
        document = json.loads(path.read_text())
        document["pipeline"]["name"] = name
        definitions.append(parse_manifest(document, base_dir=path.parent).pipeline)
    for pipeline in definitions:  # a new pipeline, then a new version of it
        first, second = _race(engine, pipeline)
        assert first == second
        assert pipeline_lookup(engine)(name) == pipeline.spec
    with engine.connect() as conn:
        assert [v["version"] for v in pipeline_detail(conn, name)["versions"]] == [1, 2]


def _spec(name: str, *stages: str) -> dict[str, Any]:
    return {"name": name, "key": ["client_id"], "stages": [{"name": s} for s in stages]}


def test_0003_carries_every_pipeline_over_with_its_runs(scratch: Engine) -> None:
    """Each run keeps the definition it was classified with, even one the registry overwrote;
    the registry's own definition is the latest version."""
    db.upgrade(scratch, "0002")
    overwritten, current = _spec("p", "a"), _spec("p", "a", "b")
    insert_run = text(
        "INSERT INTO runs (run_id, pipeline_id, status, manifest, layout, created_at) "
        "VALUES (:run, :pipeline, 'classified', CAST(:m AS JSONB), '{}', :at)"
    )
    with scratch.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO pipelines (id, name, spec, updated_at) VALUES "
                "(1, 'p', CAST(:p AS JSONB), '2026-01-03'), (2, 'q', CAST(:q AS JSONB), NULL), "
                "(3, 'unused', CAST(:u AS JSONB), NULL)"
            ),
            {
                "p": json.dumps(current),
                "q": json.dumps(_spec("q", "x")),
                "u": json.dumps(_spec("unused", "x")),
            },
        )
        for run, pipeline, spec, at in (
            ("old", 1, overwritten, "2026-01-01"),
            ("newer", 1, current, "2026-01-02"),
            ("q-run", 2, _spec("q", "x"), "2026-01-01"),
        ):
            manifest = json.dumps({"pipeline": spec, "run": {"id": run}})
            conn.execute(insert_run, {"run": run, "pipeline": pipeline, "m": manifest, "at": at})
    db.upgrade(scratch)
    with scratch.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT p.name, v.version, v.spec, array_agg(r.run_id ORDER BY r.run_id) AS runs "
                "FROM pipeline_versions v JOIN pipelines p ON p.id = v.pipeline_id "
                "LEFT JOIN runs r ON r.pipeline_version_id = v.id "
                "GROUP BY p.name, v.version, v.spec ORDER BY p.name, v.version"
            )
        ).all()
    assert [(r.name, r.version, r.spec, r.runs) for r in rows] == [
        ("p", 1, overwritten, ["old"]),
        ("p", 2, current, ["newer"]),
        ("q", 1, _spec("q", "x"), ["q-run"]),
        ("unused", 1, _spec("unused", "x"), [None]),
    ]
    assert pipeline_lookup(scratch)("p") == current
    command.downgrade(db.alembic_config(scratch), "0002")
    with scratch.connect() as conn:
        back = conn.execute(text("SELECT name, spec FROM pipelines ORDER BY name")).all()
        columns = conn.execute(
            text("SELECT column_name FROM information_schema.columns WHERE table_name = 'runs'")
        ).scalars()
        assert "pipeline_version_id" not in set(columns)
    assert [(r.name, r.spec) for r in back] == [
        ("p", current), ("q", _spec("q", "x")), ("unused", _spec("unused", "x"))
    ]  # fmt: skip
    db.upgrade(scratch)  # and up again
    with scratch.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pipeline_versions")).scalar() == 4
