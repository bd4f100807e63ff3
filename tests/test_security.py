"""Tokens and data roots: who may call the API, and which files a manifest may name."""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.openapi_check import CheckedClient
from tests.pipelines import RunBuilder, write_parquet
from tracer.config import ApiToken, Config, parse_tokens, token_digest
from tracer.errors import TracerError
from tracer.manifest import parse_manifest
from tracer.pipelines import register_pipeline

SECRETS = {
    "read": "r-secret",
    "ingest": "i-secret",
    "ci-airflow": "n-secret",
    "admin": "a-secret",
    "ops": "o-secret",
}
TOKENS = (
    "read:r-secret,ingest:i-secret,ingest:ci-airflow:n-secret,admin:a-secret,admin:ops:o-secret"
)


@pytest.fixture
def secured(app: Any, api_config: Any) -> Any:
    from api import create_app

    return create_app(dataclasses.replace(api_config, api_tokens=parse_tokens(TOKENS)))


def manifest(data_root: Path, engine: Any, **paths: str) -> dict[str, Any]:
    run_id = f"sec-{uuid.uuid4().hex[:8]}"  # and its own pipeline, p-<run id>
    path = RunBuilder(data_root, engine).manifest(
        [{"name": "a"}], {"a": [{"client_id": 1}]}, run_id=run_id
    )
    body = json.loads(path.read_text())
    body["run"]["outputs"] = {"a": paths.get("a", str(path.parent / "a.parquet"))}
    return body


def clients(app: Any) -> dict[str, CheckedClient]:
    """One client per token, and two without a valid one."""
    out = {who: CheckedClient(app, token=secret) for who, secret in SECRETS.items()}
    return {**out, "none": CheckedClient(app), "unknown": CheckedClient(app, token="wrong")}


def _unused_pipeline(data_root: Path, engine: Any) -> str:
    """A registered pipeline no run uses (the runs' own pipelines cannot be deleted)."""
    body = manifest(data_root, engine)
    pipeline = parse_manifest(body, base_dir=data_root).pipeline
    with engine.begin() as conn:
        register_pipeline(conn, pipeline)
    return pipeline.name


# Who may do what: reading needs any token, posting a run `ingest`, deleting `admin`.
MATRIX = {
    "none": (401, 401, 401, 401),
    "unknown": (401, 401, 401, 401),
    "read": (200, 403, 403, 403),
    "ingest": (200, 202, 403, 403),
    "ci-airflow": (200, 202, 403, 403),
    "admin": (200, 202, 204, 204),
    "ops": (200, 202, 204, 204),
}


def test_every_write_route_against_every_scope(
    secured: Any, data_root: Path, engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tracer.audit")
    everyone = clients(secured)
    for who, (read, post, delete_run, delete_pipeline) in MATRIX.items():
        client = everyone[who]
        body = manifest(data_root, engine)
        run = body["run"]["id"]
        assert everyone["ops"].post("/api/v1/runs", json=body).status_code == 202
        pipeline = _unused_pipeline(data_root, engine)
        got = (
            client.get("/api/v1/runs").status_code,
            client.post("/api/v1/runs", json=manifest(data_root, engine)).status_code,
            client.delete(f"/api/v1/runs/{run}").status_code,
            client.delete(f"/api/v1/pipelines/{pipeline}").status_code,
        )
        assert got == (read, post, delete_run, delete_pipeline), who
        run_left = everyone["read"].get(f"/api/v1/runs/{run}").status_code
        pipeline_left = everyone["read"].get(f"/api/v1/pipelines/{pipeline}").status_code
        assert (run_left, pipeline_left) == ((404, 404) if delete_run == 204 else (200, 200)), who
    assert not any(secret in caplog.text for secret in SECRETS.values())


def test_a_refusal_names_the_token_and_the_scope_it_needs(secured: Any) -> None:
    ingester = CheckedClient(secured, token="n-secret")
    refused = ingester.delete("/api/v1/runs/anything")
    assert refused.status_code == 403
    assert refused.get_json()["error"] == (
        "token 'ci-airflow' has scope 'ingest': DELETE here needs 'admin'"
    )
    assert 'error="insufficient_scope", scope="admin"' in refused.headers["WWW-Authenticate"]
    unnamed = CheckedClient(secured, token="r-secret").post("/api/v1/runs", json={})
    name = f"read-{token_digest('r-secret')[:8]}"
    assert unnamed.status_code == 403 and repr(name) in unnamed.get_json()["error"]


def test_deletions_are_audited_by_token_name_never_secret(
    secured: Any, data_root: Path, engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tracer.audit")
    admin, unnamed = CheckedClient(secured, token="o-secret"), CheckedClient(secured, "a-secret")
    body = manifest(data_root, engine)
    assert admin.post("/api/v1/runs", json=body).status_code == 202
    run = body["run"]["id"]
    caplog.clear()
    assert CheckedClient(secured, token="n-secret").delete(f"/api/v1/runs/{run}").status_code == 403
    assert admin.delete(f"/api/v1/runs/{run}").status_code == 204
    pipeline = body["pipeline"]["name"]
    assert unnamed.delete(f"/api/v1/pipelines/{pipeline}").status_code == 204
    audit = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "tracer.audit"]
    admin_name = f"admin-{token_digest('a-secret')[:8]}"
    assert [(level, message.split(" from ")[0]) for level, message in audit] == [
        ("WARNING", f"token 'ci-airflow' (ingest): DELETE /api/v1/runs/{run} -> 403"),
        ("INFO", f"token 'ops' (admin): DELETE /api/v1/runs/{run} -> 204"),
        ("INFO", f"token '{admin_name}' (admin): DELETE /api/v1/pipelines/{pipeline} -> 204"),
    ]
    assert not any(secret in caplog.text for secret in SECRETS.values())


def test_an_ingest_token_walking_the_runs_deletes_nothing(
    secured: Any, data_root: Path, engine: Any
) -> None:
    ops, ingester = CheckedClient(secured, token="o-secret"), CheckedClient(secured, "i-secret")
    for _ in range(3):
        assert ops.post("/api/v1/runs", json=manifest(data_root, engine)).status_code == 202
    listed, url = [], "/api/v1/runs?limit=2"
    while url:
        page = ingester.get(url).get_json()
        listed += [r["run_id"] for r in page["items"]]
        url = page["next_url"] and page["next_url"].removeprefix("http://localhost")
    assert len(listed) >= 3
    assert {ingester.delete(f"/api/v1/runs/{run}").status_code for run in listed} == {403}
    for run in listed:
        assert ingester.get(f"/api/v1/runs/{run}").status_code == 200


def test_health_and_the_documents_stay_open(secured: Any) -> None:
    client = secured.test_client()
    assert client.get("/api/v1/health").status_code == 200
    assert client.get("/api/v1/openapi.json").status_code == 200
    assert client.get("/api/v1/docs").status_code == 200


def test_tokens_are_held_as_digests_with_names() -> None:
    tokens = parse_tokens(TOKENS)
    assert not any(secret in json.dumps(repr(tokens)) for secret in SECRETS.values())
    assert tokens[token_digest("n-secret")] == ApiToken("ingest", "ci-airflow")
    assert tokens[token_digest("r-secret")] == ApiToken(
        "read", f"read-{token_digest('r-secret')[:8]}"
    )
    assert sorted(t.scope for t in tokens.values()) == [
        "admin",
        "admin",
        "ingest",
        "ingest",
        "read",
    ]
    config = Config.from_env({"TRACER_API_TOKENS": TOKENS, "TRACER_DATA_ROOTS": "/a:/b"})
    assert config.api_tokens == tokens and config.data_roots == (Path("/a"), Path("/b"))
    # A scope may do what the ones before it may.
    assert [ApiToken("ingest", "x").allows(s) for s in ("read", "ingest", "admin")] == [
        True, True, False
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s3cr3t", "item 1: expected 'scope:token' or 'scope:name:token'"),
        ("read:a,owner:s3cr3t", "item 2: expected 'scope:token' or 'scope:name:token'"),
        ("read:", "item 1 (read): the token is empty"),
        ("admin:ops:", "item 1 (admin): the token is empty"),
        ("admin::s3cr3t", "item 1 (admin): the name between the first and second ':'"),
        ("admin:s3 cr:3t", "item 1 (admin): the name between the first and second ':'"),
        ("read:ops:s3cr3t,admin:ops:other", "item 2 (admin): the name 'ops' is given to two"),
        ("read:s3cr3t,admin:ops:s3cr3t", "item 2 (admin:ops): the same token is listed twice"),
    ],
)
def test_malformed_tokens_are_refused_without_showing_a_secret(text: str, message: str) -> None:
    with pytest.raises(TracerError, match="TRACER_API_TOKENS") as refused:
        parse_tokens(text)
    assert message in refused.value.message and "s3" not in refused.value.message


def test_paths_outside_the_data_roots_are_refused_before_queueing(
    app: Any, data_root: Path, engine: Any, tmp_path: Path, api_config: Any
) -> None:
    from redis import Redis
    from rq import Queue

    from workers.queues import queue_names

    outside = tmp_path / "outside"
    write_parquet(outside / "a.parquet", [{"client_id": 1}])
    (data_root / "escape").symlink_to(outside, target_is_directory=True)
    client = CheckedClient(app)
    for path in (
        str(outside / "a.parquet"),  # plainly elsewhere
        str(data_root / ".." / "outside" / "a.parquet"),  # `..` out of the root
        str(data_root / "escape" / "a.parquet"),  # a symlink out of the root
        "escape/a.parquet",  # relative, resolved from the root, then the symlink
    ):
        response = client.post("/api/v1/runs", json=manifest(data_root, engine, a=path))
        assert response.status_code == 422, path
        assert any("outside the data roots" in e for e in response.get_json()["errors"]), path
    queue = Queue(queue_names(api_config)[0], connection=Redis.from_url(api_config.redis_url))
    assert queue.count == 0
    inside = client.post("/api/v1/runs", json=manifest(data_root, engine))
    assert inside.status_code == 202
    detail = client.get(f"/api/v1/runs/{inside.get_json()['run_id']}").get_json()
    assert detail["datasets"][0]["uri"].startswith(str(data_root))
