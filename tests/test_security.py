"""Tokens and data roots: who may call the API, and which files a manifest may name."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from tests.openapi_check import CheckedClient
from tests.pipelines import RunBuilder, write_parquet
from tracer.config import Config, parse_tokens
from tracer.errors import TracerError

TOKENS = "read:r-secret,ingest:i-secret"


@pytest.fixture
def secured(app: Any, api_config: Any) -> Any:
    from api import create_app

    return create_app(dataclasses.replace(api_config, api_tokens=parse_tokens(TOKENS)))


def manifest(data_root: Path, engine: Any, **paths: str) -> dict[str, Any]:
    path = RunBuilder(data_root, engine).manifest([{"name": "a"}], {"a": [{"client_id": 1}]})
    body = json.loads(path.read_text())
    body["run"]["outputs"] = {"a": paths.get("a", str(path.parent / "a.parquet"))}
    return body


def test_no_token_is_401_a_read_token_cannot_post(
    secured: Any, data_root: Path, engine: Any
) -> None:
    body = manifest(data_root, engine)
    anonymous = CheckedClient(secured)
    response = anonymous.get("/api/v1/runs")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (
        anonymous.get("/api/v1/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    )
    reader = CheckedClient(secured, token="r-secret")
    assert reader.get("/api/v1/runs").status_code == 200
    forbidden = reader.post("/api/v1/runs", json=body)
    assert forbidden.status_code == 403 and forbidden.get_json()["ok"] is False
    assert reader.delete("/api/v1/runs/whatever").status_code == 403
    ingester = CheckedClient(secured, token="i-secret")
    assert ingester.post("/api/v1/runs", json=body).status_code == 202
    assert ingester.get("/api/v1/runs").status_code == 200  # ingest may also read


def test_health_and_the_documents_stay_open(secured: Any) -> None:
    client = secured.test_client()
    assert client.get("/api/v1/health").status_code == 200
    assert client.get("/api/v1/openapi.json").status_code == 200
    assert client.get("/api/v1/docs").status_code == 200


def test_tokens_are_held_as_digests_and_malformed_ones_refused() -> None:
    tokens = parse_tokens(TOKENS)
    assert "r-secret" not in json.dumps(tokens) and sorted(tokens.values()) == ["ingest", "read"]
    with pytest.raises(TracerError, match="TRACER_API_TOKENS"):
        parse_tokens("admin:x")
    config = Config.from_env({"TRACER_API_TOKENS": TOKENS, "TRACER_DATA_ROOTS": "/a:/b"})
    assert config.api_tokens == tokens and config.data_roots == (Path("/a"), Path("/b"))


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
        assert response.status_code == 400, path
        assert any("outside the data roots" in e for e in response.get_json()["errors"]), path
    queue = Queue(queue_names(api_config)[0], connection=Redis.from_url(api_config.redis_url))
    assert queue.count == 0
    inside = client.post("/api/v1/runs", json=manifest(data_root, engine))
    assert inside.status_code == 202
    detail = client.get(f"/api/v1/runs/{inside.get_json()['run_id']}").get_json()
    assert detail["datasets"][0]["uri"].startswith(str(data_root))
