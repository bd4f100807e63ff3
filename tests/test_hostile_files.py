"""Hostile files and manifests (issue #10): refused with a message naming the fault, through
the CLI and through the API, and the database left as it was.

The corpus (tests/hostile_files.py) is generated once per module under one folder, which
is also the API's data root. An earlier good run is ingested first: every case must leave
its reconciliation, and every table, as they were.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, text

from tests.conftest import REDIS_URL
from tests.hostile_files import CASES, Case, build_corpus
from tests.pipelines import RunBuilder
from tests.test_ingest_failures import snapshot
from tracer.cli import main
from tracer.queries.reconciliation import reconciliation

BASELINE = "hostile-baseline"
REGISTRATION = {"runs", "datasets", "pipelines", "pipeline_versions"}  # what a 202 writes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    return build_corpus(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> dict[str, Any]:
    """An earlier run, whose answers no hostile input may change."""
    build = RunBuilder(tmp_path_factory.mktemp("baseline"), engine)
    rows = [{"client_id": i} for i in range(1, 11)]
    build.run([{"name": "a"}, {"name": "b"}], {"a": rows, "b": rows[:7]}, run_id=BASELINE)
    return build.report(BASELINE)


@pytest.fixture(scope="module")
def service(corpus: dict[str, Case], database_url: str, engine: Engine) -> Iterator[Any]:
    """The API on the test database, real Redis, queues of its own, the corpus as data root."""
    from redis import Redis
    from rq import Queue, SimpleWorker

    from api import create_app
    from tracer.config import Config
    from workers import jobs
    from workers.queues import queue_names

    root = next(iter(corpus.values())).folder.parent
    config = Config(
        database_url=database_url,
        redis_url=REDIS_URL,
        data_roots=(root,),
        queue_prefix=f"tracer-hostile-{uuid.uuid4().hex[:8]}",
    )
    connection = Redis.from_url(REDIS_URL)
    queues = [Queue(name, connection=connection) for name in queue_names(config)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", database_url)  # jobs read it from the environment
        jobs.engine.cache_clear()
        client = create_app(config).test_client()

        def work() -> None:
            SimpleWorker(queues, connection=connection).work(burst=True)

        yield client, work, queues
        jobs.engine.cache_clear()
    for queue in queues:
        queue.empty()


def cli(database_url: str, *args: str) -> Result:
    env = {"DATABASE_URL": database_url, "REDIS_URL": None, "COLUMNS": "200"}
    return CliRunner().invoke(main, list(args), env=env)


def assert_names(message: str, expect: tuple[str, ...]) -> None:
    for part in expect:
        assert part in message, f"{part!r} not in {message!r}"


def unchanged(engine: Engine, before: dict[str, str], baseline: dict[str, Any]) -> None:
    assert snapshot(engine) == before
    with engine.connect() as conn:
        assert reconciliation(conn, BASELINE) == baseline


def chunks_of(engine: Engine, run_id: str, dataset: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM dataset_chunks c JOIN datasets d ON d.id = c.dataset_id "
                "JOIN runs r ON r.pk = d.run_pk WHERE r.run_id = :r AND d.name = :d"
            ),
            {"r": run_id, "d": dataset},
        ).scalar_one()


def _cases(channel: str) -> list[str]:
    return [n for n in CASES if channel not in _EXCLUDED.get(n, ())]


# Cases one channel never sees: a CLI reads whatever its user can (no data roots).
_EXCLUDED = {"path_escapes_root": ("cli",), "symlink_escapes_root": ("cli",)}


@pytest.mark.parametrize("name", _cases("cli"))
def test_cli(
    name: str, corpus: dict[str, Case], database_url: str, engine: Engine, baseline: Any
) -> None:
    case = corpus[name]
    before = snapshot(engine)
    result = cli(database_url, "ingest", str(case.manifest_path), "--json")
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )  # a traceback is a bug
    if case.fails == "accepted":
        assert result.exit_code == 0, result.output
        assert_accepted(engine, case, case.document["run"]["id"])  # type: ignore[index]
        return
    assert result.exit_code == 2, result.output
    assert_names(result.stderr, case.expect)
    assert str(case.manifest_path) in result.stderr or case.fails == "ingest"
    unchanged(engine, before, baseline)


@pytest.mark.parametrize("name", _cases("api"))
def test_api(
    name: str, corpus: dict[str, Case], service: Any, engine: Engine, baseline: Any
) -> None:
    client, work, queues = service
    case = corpus[name]
    before = snapshot(engine)
    if case.document is not None:
        response = client.post("/api/v1/runs", json=case.body())
    else:
        assert case.raw is not None
        response = client.post("/api/v1/runs", data=case.raw, content_type="application/yaml")
    body = response.get_json()
    if case.fails == "manifest":
        assert response.status_code == case.api_status, body
        assert body["ok"] is False and body["status"] == response.status_code
        assert_names(" | ".join([body["error"], *body["errors"]]), case.api_expect or case.expect)
        assert all(q.count == 0 for q in queues)  # nothing queued
        unchanged(engine, before, baseline)
        return
    assert response.status_code == 202, body
    run_id = body["run_id"]
    work()
    detail = client.get(f"/api/v1/runs/{run_id}").get_json()
    if case.fails == "accepted":
        assert detail["status"] == "classified", detail
        assert_accepted(engine, case, run_id)
        return
    assert detail["status"] == "failed", detail
    assert_names(detail["error"], case.expect)
    assert {d["name"]: d["status"] for d in detail["datasets"]}["b"] == "failed"
    assert chunks_of(engine, run_id, "b") == 0  # nothing of the failed dataset is kept
    # Only the failed run's own record and, in a partition of its own, its good dataset `a`
    # (each dataset is its own job); every table and partition that existed is as it was.
    after = snapshot(engine)
    changed = {t for t in before if after.get(t) != before[t]}
    assert changed <= REGISTRATION | {"dataset_chunks"}, changed
    assert all(t.startswith("dataset_chunks_") for t in set(after) - set(before))
    with engine.connect() as conn:
        assert reconciliation(conn, BASELINE) == baseline


def assert_accepted(engine: Engine, case: Case, run_id: str) -> None:
    with engine.connect() as conn:
        report = reconciliation(conn, run_id)
    totals = report["totals"]
    if "null_key_rows" in case.extra:  # the contract: counted, flagged, not reconciling
        n = case.extra["null_key_rows"]
        assert totals["null_key_rows"] == n and totals["reconciles"] is False
        assert f"{n} rows with a null key" in totals["failed_conditions"]
        b = next(s for s in report["stages"] if s["stage"] == "b")
        assert b["flags"]["null_key"]["output"] == n
    if "orphaned" in case.extra:
        assert totals["orphaned"] == case.extra["orphaned"]


# The CLI's own ways to be handed something that is not a manifest --------------------


def test_cli_manifest_missing_or_a_directory(
    tmp_path: Path, database_url: str, engine: Engine, baseline: Any
) -> None:
    before = snapshot(engine)
    missing = cli(database_url, "ingest", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2
    assert_names(missing.stderr, ("cannot read manifest", "nope.yaml", "No such file"))
    folder = cli(database_url, "ingest", str(tmp_path))
    assert folder.exit_code == 2 and "Traceback" not in folder.output
    assert_names(folder.output, (str(tmp_path), "is a directory"))
    unchanged(engine, before, baseline)


def test_cli_prints_a_single_validation_error_in_full(
    corpus: dict[str, Case], database_url: str
) -> None:
    """Not just "invalid manifest": the field and what is wrong with it."""
    result = cli(database_url, "ingest", str(corpus["huge_label"].manifest_path))
    assert result.exit_code == 2
    assert "run.label: String should have at most 1000 characters" in result.stderr
