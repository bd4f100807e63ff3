"""OpenLineage out and in: events emitted with the official client, parsed back into its own
classes and checked against the spec; the custom facet against its shipped schema; a round
trip over HTTP into a second tracer; and an Airflow-shaped event sequence that registers a run.
"""

from __future__ import annotations

import gzip
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
import referencing
import yaml
from click.testing import CliRunner
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import job_type_job, parent_run, tags_run
from openlineage.client.generated.input_statistics_input_dataset import (
    InputStatisticsInputDatasetFacet as InputStatistics,
)
from openlineage.client.generated.output_statistics_output_dataset import (
    OutputStatisticsOutputDatasetFacet as OutputStatistics,
)
from openlineage.client.serde import Serde
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server

from tests.conftest import ADMIN_URL, REDIS_URL, _libpq
from tests.openapi_check import CheckedClient
from tests.pipelines import RunBuilder, write_parquet
from tracer import db
from tracer.cli import main
from tracer.errors import ManifestError, TracerError
from tracer.manifest import parse_manifest
from tracer.openlineage_in import define_pipeline
from tracer.openlineage_out import (
    FACET,
    FACET_SCHEMA_URL,
    PRODUCER,
    TracerReconciliationRunFacet,
    emit_after_classification,
    emit_run,
    facet_schema,
    run_events,
    run_uuid,
)
from tracer.queries.reconciliation import reconciliation
from tracer.tables import openlineage_runs, pipelines

SPEC_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
STAGES = [{"name": "selection"}, {"name": "exclusions"}, {"name": "targets"}]
TRACE_MAIN = {"reported": True, "stage_column": "stage", "reason_column": "reason"}
BUFFER = {"reported": False, "stage": "exclusions", "reason_column": "reason"}


@pytest.fixture(scope="module")
def source_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ol-data")


@pytest.fixture(scope="module")
def run_id(source_root: Path, engine: Engine) -> str:
    """30 clients (701-730, apart from other modules' keys): 3 dropped with a reported
    reason and 1 only operationally at exclusions, 2 orphaned there; at targets 2 dropped,
    1 orphaned and 1 both targeted and logged."""
    return RunBuilder(source_root, engine).run(
        stages=STAGES,
        outputs={
            "selection": [{"client_id": 700 + i} for i in range(1, 31)],
            "exclusions": [{"client_id": 700 + i} for i in range(1, 25)],
            "targets": [{"client_id": 700 + i} for i in range(1, 22)],
        },
        trace={
            "trace_main": (
                TRACE_MAIN,
                [
                    {"client_id": 700 + i, "stage": "exclusions", "reason": "opt_out"}
                    for i in (25, 26, 27)
                ]
                + [
                    {"client_id": 700 + i, "stage": "targets", "reason": "cap"} for i in (22, 23, 5)
                ],
            ),
            "buffer": (BUFFER, [{"client_id": 728, "reason": "buffer"}]),
        },
        run_id="ol-run",
    )


# The client's own classes: an event dict rebuilt from them must serialise back identically,
# so every field and facet is one the client knows, with the schema URL its class declares.


def _parent(f: dict[str, Any]) -> parent_run.ParentRunFacet:
    root = f.get("root")
    return parent_run.ParentRunFacet(
        run=parent_run.Run(runId=f["run"]["runId"]),
        job=parent_run.Job(namespace=f["job"]["namespace"], name=f["job"]["name"]),
        root=parent_run.Root(
            run=parent_run.RootRun(runId=root["run"]["runId"]),
            job=parent_run.RootJob(namespace=root["job"]["namespace"], name=root["job"]["name"]),
        )
        if root
        else None,
        producer=f["_producer"],
    )


RUN_FACETS = {
    "parent": _parent,
    FACET: lambda f: TracerReconciliationRunFacet(
        **{k: v for k, v in f.items() if not k.startswith("_")}, producer=f["_producer"]
    ),
    "tags": lambda f: tags_run.TagsRunFacet(
        tags=[tags_run.TagsRunFacetFields(**t) for t in f["tags"]], producer=f["_producer"]
    ),
}


def rebuild(data: dict[str, Any]) -> RunEvent:
    """The event as the client's classes (whose validators check the run id and the time)."""
    job_facets = {
        name: job_type_job.JobTypeJobFacet(
            **{k: v for k, v in f.items() if not k.startswith("_")}, producer=f["_producer"]
        )
        for name, f in data["job"].get("facets", {}).items()
    }
    event = RunEvent(
        eventType=RunState(data["eventType"]),
        eventTime=data["eventTime"],
        producer=data["producer"],
        run=Run(
            runId=data["run"]["runId"],
            facets={n: RUN_FACETS[n](f) for n, f in data["run"]["facets"].items()},
        ),
        job=Job(namespace=data["job"]["namespace"], name=data["job"]["name"], facets=job_facets),
        inputs=[
            InputDataset(
                namespace=d["namespace"],
                name=d["name"],
                inputFacets={
                    "inputStatistics": InputStatistics(
                        rowCount=d["inputFacets"]["inputStatistics"]["rowCount"],
                        producer=d["inputFacets"]["inputStatistics"]["_producer"],
                    )
                },
            )
            for d in data.get("inputs", [])
        ],
        outputs=[
            OutputDataset(
                namespace=d["namespace"],
                name=d["name"],
                outputFacets={
                    "outputStatistics": OutputStatistics(
                        rowCount=d["outputFacets"]["outputStatistics"]["rowCount"],
                        producer=d["outputFacets"]["outputStatistics"]["_producer"],
                    )
                },
            )
            for d in data.get("outputs", [])
        ],
    )
    assert Serde.to_dict(event) == data
    return event


def _facets(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from data["run"]["facets"].values()
    yield from data["job"].get("facets", {}).values()
    for d in data.get("inputs", []):
        yield from d.get("facets", {}).values()
        yield from d.get("inputFacets", {}).values()
    for d in data.get("outputs", []):
        yield from d.get("facets", {}).values()
        yield from d.get("outputFacets", {}).values()


def facet_validator() -> jsonschema.Draft202012Validator:
    """The shipped schema, registered under its id, so the facet's _schemaURL resolves to it."""
    schema = facet_schema()
    registry = referencing.Registry().with_resource(
        schema["$id"], referencing.Resource.from_contents(schema)
    )
    return jsonschema.Draft202012Validator(
        {"$ref": FACET_SCHEMA_URL},
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def check_spec(data: dict[str, Any]) -> RunEvent:
    """Every field the OpenLineage spec requires of a RunEvent, and of each facet."""
    event = rebuild(data)
    assert data["eventType"] == "COMPLETE"
    assert "T" in data["eventTime"] and datetime.fromisoformat(data["eventTime"]).tzinfo
    assert str(uuid.UUID(data["run"]["runId"])) == data["run"]["runId"]
    assert data["job"]["namespace"] and data["job"]["name"]
    assert data["producer"] == PRODUCER and data["schemaURL"] == SPEC_URL
    for facet in _facets(data):
        assert facet["_producer"] and facet["_schemaURL"].split("#")[1].startswith("/$defs/")
    facet_validator().validate(data["run"]["facets"][FACET])
    return event


def test_emitted_events_meet_the_spec(engine: Engine, run_id: str) -> None:
    events = [Serde.to_dict(e) for e in run_events(engine, run_id)]
    assert [e["job"]["name"] for e in events] == [f"p-{run_id}.{s['name']}" for s in STAGES]
    for e in events:
        check_spec(e)
    by_stage = {e["job"]["name"].rsplit(".", 1)[1]: e for e in events}
    exclusions = by_stage["exclusions"]
    # Run ids are uuid5 of tracer's run id: the same on every emission, the parent the run's.
    assert exclusions["run"]["runId"] == run_uuid(run_id, "exclusions")
    parent = exclusions["run"]["facets"]["parent"]
    assert parent["run"]["runId"] == run_uuid(run_id)
    assert (parent["job"]["namespace"], parent["job"]["name"]) == ("tracer", f"p-{run_id}")
    assert [Serde.to_json(e) for e in run_events(engine, run_id)] == [
        json.dumps(e, sort_keys=True) for e in events
    ]
    # Inputs and outputs with their row counts.
    assert [(Path(d["name"]).name, d["inputFacets"]["inputStatistics"]["rowCount"])
            for d in exclusions["inputs"]] == [("selection.parquet", 30)]  # fmt: skip
    assert sorted(
        (Path(d["name"]).name, d["outputFacets"]["outputStatistics"]["rowCount"])
        for d in exclusions["outputs"]
    ) == [("buffer.parquet", 1), ("exclusions.parquet", 24), ("trace_main.parquet", 3)]
    assert all(d["namespace"] == "file" for e in events for d in e["inputs"] + e["outputs"])
    # The custom facet: what happened to the keys there, and the stage's share of the gap.
    facet = exclusions["run"]["facets"][FACET]
    assert facet["keys"]["dropped"] == 3 and facet["keys"]["dropped_unreported"] == 1
    assert facet["keys"]["orphaned"] == 2
    assert facet["drops"] == {
        "rows_reported": 3, "rows_operational": 1, "keys_reported": 3, "keys_operational": 1
    }  # fmt: skip
    totals = reconciliation_of(engine, run_id)["totals"]
    facets = [e["run"]["facets"][FACET] for e in events]
    assert sum(f["gap_contribution"]["gap"] for f in facets) == totals["gap"]
    assert sum(f["gap_contribution"]["reporting_gap"] for f in facets) == totals["reporting_gap"]
    assert by_stage["targets"]["run"]["facets"][FACET]["gap_contribution"]["cells"] == {
        "lost": 1, "counted_twice": -1
    }  # fmt: skip
    assert all(f["run_reconciles"] is False for f in facets)


def test_a_facet_that_breaks_its_schema_is_caught() -> None:
    """The schema check above has teeth: a missing figure or a negative count fails it."""
    validator = facet_validator()
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"_producer": PRODUCER, "_schemaURL": FACET_SCHEMA_URL})
    schema = facet_schema()["$defs"]["TracerReconciliationRunFacet"]
    assert set(schema["required"]) >= {"keys", "drops", "gap_contribution", "_schemaURL"}


def reconciliation_of(engine: Engine, run_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return reconciliation(conn, run_id)


def test_cli_emits_through_the_configured_transport(
    engine: Engine, database_url: str, run_id: str, tmp_path: Path
) -> None:
    """`openlineage.yml` as the client reads it (here via OPENLINEAGE_CONFIG): a file transport."""
    events_file = tmp_path / "events.jsonl"
    config = tmp_path / "openlineage.yml"
    transport = {"type": "file", "log_file_path": str(events_file), "append": True}
    config.write_text(yaml.safe_dump({"transport": transport}))
    runner = CliRunner()
    env = {"DATABASE_URL": database_url, "OPENLINEAGE_CONFIG": str(config)}
    result = runner.invoke(main, ["openlineage", "emit", run_id, "--namespace", "prod"], env=env)
    assert result.exit_code == 0, result.output
    assert "sent 3 events" in result.stdout and "file transport" in result.stdout
    sent = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [e["job"]["namespace"] for e in sent] == ["prod"] * 3
    for e in sent:  # the client adds its own tags facet; still every field the spec asks
        check_spec(e)
    dry = runner.invoke(main, ["openlineage", "emit", run_id, "--dry-run"], env=env)
    assert [json.loads(line)["job"]["namespace"] for line in dry.stdout.splitlines()] == [
        "tracer"
    ] * 3
    missing = runner.invoke(main, ["openlineage", "emit", "no-such-run"], env=env)
    assert missing.exit_code == 2 and "not found" in missing.output
    refused = tmp_path / "refused.yml"  # nothing listens there: a clear error, exit 2
    refused.write_text(yaml.safe_dump({"transport": {
        "type": "http", "url": "http://127.0.0.1:9", "retry": {"total": 0}, "timeout": 2
    }}))  # fmt: skip
    env["OPENLINEAGE_CONFIG"] = str(refused)
    failed = runner.invoke(main, ["openlineage", "emit", run_id], env=env)
    assert failed.exit_code == 2 and "OpenLineage transport 'http' failed" in failed.output


def test_emit_after_classification_only_when_asked(
    engine: Engine, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events_file = tmp_path / "auto.jsonl"
    config = tmp_path / "openlineage.yml"
    config.write_text(yaml.safe_dump({"transport": {
        "type": "file", "log_file_path": str(events_file), "append": True
    }}))  # fmt: skip
    monkeypatch.setenv("OPENLINEAGE_CONFIG", str(config))
    monkeypatch.delenv("TRACER_OPENLINEAGE_EMIT", raising=False)
    assert emit_after_classification(engine, run_id=run_id) is False
    assert not events_file.exists()
    monkeypatch.setenv("TRACER_OPENLINEAGE_EMIT", "true")
    with engine.connect() as conn:
        from tracer.tables import runs

        run_pk = conn.execute(select(runs.c.pk).where(runs.c.run_id == run_id)).scalar_one()
    assert emit_after_classification(engine, run_pk=run_pk) is True
    assert len(events_file.read_text().splitlines()) == 3
    # A lineage backend that is down never fails the caller: logged, reported as not sent.
    config.write_text(yaml.safe_dump({"transport": {
        "type": "http", "url": "http://127.0.0.1:9", "retry": {"total": 0}, "timeout": 2
    }}))  # fmt: skip
    assert emit_after_classification(engine, run_id=run_id) is False


# Receiving ------------------------------------------------------------------------------------


@pytest.fixture
def replica_url() -> Iterator[str]:
    """A second tracer's own database."""
    name = f"tracer_replica_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    db.upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with psycopg.connect(_libpq(ADMIN_URL), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def served() -> Iterator[Any]:
    """Serve apps over real HTTP on loopback, each on a free port, for one test."""
    servers = []

    def serve(app: Any) -> str:
        server = make_server(host="127.0.0.1", port=0, app=app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def work_queues(config: Any) -> None:
    from redis import Redis
    from rq import Queue, SimpleWorker

    from workers.queues import queue_names

    connection = Redis.from_url(config.redis_url)
    queues = [Queue(name, connection=connection) for name in queue_names(config)]
    try:
        SimpleWorker(queues, connection=connection).work(burst=True)
    finally:
        for queue in queues:
            queue.empty()


def test_round_trip_over_http_to_a_second_tracer(
    engine: Engine,
    run_id: str,
    source_root: Path,
    replica_url: str,
    served: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tracer emits the run with the client's HTTP transport to another tracer whose pipeline
    maps those jobs; the other registers the run from the events and reconciles it the same."""
    from api import create_app
    from tracer.config import Config, parse_tokens
    from workers import jobs

    config = Config(
        database_url=replica_url,
        redis_url=REDIS_URL,
        data_roots=(source_root,),
        queue_prefix=f"tracer-test-{uuid.uuid4().hex[:8]}",
        api_tokens=parse_tokens("ingest:ol-ingest,read:ol-read"),
    )
    replica = create_engine(replica_url)
    job = f"p-{run_id}"

    def mapped(stage: str, output: str | None = None) -> dict[str, Any]:
        return {"namespace": "tracer", "job": f"{job}.{stage}", "output": output}

    define_pipeline(
        replica,
        {
            "name": "replica",
            "key": ["client_id"],
            "stages": [
                {"name": "selection", "openlineage": mapped("selection")},
                {"name": "exclusions", "openlineage": mapped("exclusions", "*/exclusions.parquet")},
                {"name": "targets", "openlineage": mapped("targets", "*/targets.parquet")},
            ],
            "traceability": [
                {
                    **TRACE_MAIN,
                    "name": "trace_main",
                    "openlineage": mapped("exclusions", "*/trace_main.parquet"),
                },
                {**BUFFER, "name": "buffer", "openlineage": mapped("exclusions", "*/buffer.*")},
            ],
        },
        "test",
    )
    monkeypatch.setenv("DATABASE_URL", replica_url)  # for the jobs SimpleWorker runs here
    jobs.engine.cache_clear()
    base = served(create_app(config))

    def client(token: str) -> OpenLineageClient:
        transport = {"type": "http", "url": base, "retry": {"total": 0},
                     "auth": {"type": "api_key", "apiKey": token}}  # fmt: skip
        return OpenLineageClient(config={"transport": transport})

    with pytest.raises(TracerError, match="403"):  # a read token may not post
        emit_run(engine, run_id, client=client("ol-read"))
    events = run_events(engine, run_id)
    sender = client("ol-ingest")
    for event in events[:2]:
        sender.emit(event)
    group = run_uuid(run_id)  # the parent run: tracer's run on the sending side
    checked = CheckedClient(create_app(config), token="ol-read")
    waiting = checked.get("/api/v1/lineage/pending").get_json()["items"]
    assert [(r["run_id"], r["pipeline"], r["status"], r["events"]) for r in waiting] == [
        (group, "replica", "pending", 2)  # the refused post stored nothing
    ]
    assert [m["name"] for m in waiting[0]["missing"]] == ["targets"]
    assert "no event of its job yet" in waiting[0]["missing"][0]["reason"]
    sender.emit(events[2])
    sender.close()
    with replica.connect() as conn:
        row = conn.execute(select(openlineage_runs)).one()
    assert (row.parent_run_id, row.status, row.missing) == (group, "queued", [])
    work_queues(config)
    jobs.engine.cache_clear()
    mine, theirs = reconciliation_of(engine, run_id), reconciliation_of(replica, group)
    assert theirs["run"]["pipeline"] == "replica" and theirs["run"]["status"] == "classified"
    assert {k: v for k, v in theirs.items() if k != "run"} == {
        k: v for k, v in mine.items() if k != "run"
    }
    assert checked.get("/api/v1/lineage/pending").get_json()["items"] == []
    replica.dispose()


# An Airflow DAG run, as the Airflow OpenLineage provider reports it --------------------------

AIRFLOW = "https://github.com/apache/airflow/tree/providers-openlineage/2.2.0"


def _facet_url(version: str, name: str) -> str:
    return f"https://openlineage.io/spec/facets/{version}/{name}.json#/$defs/{name}"


class DagRun:
    """Events of one run of DAG `campaign` in namespace airflow-prod: a DAG START, then
    START/COMPLETE (or FAIL) per task try, each task's run with the DAG run as its parent."""

    def __init__(self) -> None:
        self.run_id = str(uuid.uuid4())
        self.minute = 0

    def _time(self) -> str:
        self.minute += 1
        return f"2026-11-25T06:{self.minute:02d}:00.123456+00:00"

    def dag(self, event_type: str) -> dict[str, Any]:
        return {
            "eventType": event_type,
            "eventTime": self._time(),
            "producer": AIRFLOW,
            "schemaURL": SPEC_URL,
            "run": {"runId": self.run_id, "facets": {"nominalTime": {
                "_producer": AIRFLOW,
                "_schemaURL": _facet_url("1-0-1", "NominalTimeRunFacet"),
                "nominalStartTime": "2026-11-25T06:00:00+00:00",
            }}},
            "job": {"namespace": "airflow-prod", "name": "campaign", "facets": {}},
            "inputs": [],
            "outputs": [],
        }  # fmt: skip

    def task(
        self,
        task: str,
        event_type: str,
        outputs: list[tuple[str, str]] = (),  # type: ignore[assignment]
        run_id: str | None = None,
    ) -> dict[str, Any]:
        parent = {
            "run": {"runId": self.run_id},
            "job": {"namespace": "airflow-prod", "name": "campaign"},
        }
        return {
            "eventType": event_type,
            "eventTime": self._time(),
            "producer": AIRFLOW,
            "schemaURL": SPEC_URL,
            "run": {
                "runId": run_id or str(uuid.uuid4()),
                "facets": {
                    "parent": {
                        "_producer": AIRFLOW,
                        "_schemaURL": _facet_url("1-1-0", "ParentRunFacet"),
                        **parent,
                        "root": parent,
                    },
                    "airflow": {
                        "_producer": AIRFLOW,
                        "_schemaURL": "https://raw.githubusercontent.com/apache/airflow/providers-openlineage/2.2.0/airflow/providers/openlineage/facets/AirflowRunFacet.json#/$defs/AirflowRunFacet",
                        "dag": {"dag_id": "campaign"},
                        "task": {"task_id": task, "operator_class": "SparkSubmitOperator"},
                        "taskInstance": {"try_number": 1},
                    },
                },
            },
            "job": {
                "namespace": "airflow-prod",
                "name": f"campaign.{task}",
                "facets": {"jobType": {
                    "_producer": AIRFLOW,
                    "_schemaURL": _facet_url("2-0-3", "JobTypeJobFacet"),
                    "processingType": "BATCH", "integration": "AIRFLOW", "jobType": "TASK",
                }},
            },
            "inputs": [{"namespace": "s3://bank-raw", "name": "clients/2026-11-25", "facets": {}}],
            "outputs": [{"namespace": ns, "name": name, "facets": {}} for ns, name in outputs],
        }  # fmt: skip


def _task(name: str, output: str | None = None) -> dict[str, Any]:
    """A mapping onto a task of DAG `campaign` in namespace airflow-prod."""
    return {"namespace": "airflow-prod", "job": f"campaign.{name}", "output": output}


AIRFLOW_PIPELINE = {
    "name": "scheduled_campaign",
    "key": ["client_id"],
    "stages": [
        {"name": "selection", "openlineage": _task("select_clients")},
        {"name": "exclusions", "openlineage": _task("apply_exclusions", "*/exclusions")},
        {"name": "targets", "openlineage": _task("choose_targets")},
    ],
    "traceability": [
        {
            **TRACE_MAIN,
            "name": "trace_main",
            "openlineage": _task("apply_exclusions", "*/trace_main.parquet"),
        },
    ],
}


def test_an_airflow_dag_run_registers_a_run(
    app: Any, engine: Engine, data_root: Path, run_jobs: Any
) -> None:
    define_pipeline(engine, AIRFLOW_PIPELINE, "test")
    out = data_root / "campaign" / "2026-11-25"
    write_parquet(out / "selection.parquet", [{"client_id": i} for i in range(1, 11)])
    write_parquet(out / "exclusions", [{"client_id": i} for i in range(1, 8)], spark=True)
    trace = [{"client_id": i, "stage": "exclusions", "reason": "opt_out"} for i in (8, 9)]
    write_parquet(out / "trace_main.parquet", trace)
    write_parquet(out / "targets.parquet", [{"client_id": i} for i in range(1, 7)])
    local = lambda name: ("file", str(out / name))  # noqa: E731
    dag = DagRun()
    client = CheckedClient(app)

    def post(event: dict[str, Any]) -> dict[str, Any]:
        response = client.post("/api/v1/lineage", json=event)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    assert post(dag.dag("START"))["status"] == "ignored"  # the DAG's own job maps no stage
    first = post(dag.task("select_clients", "START"))
    assert first["status"] == "accepted"
    assert [(r["run_id"], r["status"]) for r in first["runs"]] == [(dag.run_id, "pending")]
    post(dag.task("select_clients", "COMPLETE", [
        ("s3://bank-curated", "campaign/selection"), local("selection.parquet")
    ]))  # fmt: skip
    retried = str(uuid.uuid4())
    post(dag.task("apply_exclusions", "START", run_id=retried))
    failed = post(dag.task("apply_exclusions", "FAIL", run_id=retried))
    reasons = {m["name"]: m["reason"] for m in failed["runs"][0]["missing"]}
    assert "last event: FAIL" in reasons["exclusions"] and "no event" in reasons["targets"]
    post(dag.task("apply_exclusions", "START"))
    post(
        dag.task("apply_exclusions", "COMPLETE", [local("exclusions"), local("trace_main.parquet")])
    )
    assert post(dag.task("notify_crm", "COMPLETE", [("s3://crm", "export")]))["status"] == "ignored"
    pending = client.get("/api/v1/lineage/pending").get_json()["items"]
    mine = next(r for r in pending if r["run_id"] == dag.run_id)
    assert mine["parent"] == {"namespace": "airflow-prod", "name": "campaign"}
    assert [m["name"] for m in mine["missing"]] == ["targets"] and mine["events"] == 6
    done = post(dag.task("choose_targets", "COMPLETE", [local("targets.parquet")]))
    (run,) = done["runs"]
    assert (run["run_id"], run["status"], run["missing"]) == (dag.run_id, "queued", [])
    assert len(run["job_ids"]["ingest"]) == 4
    assert post(dag.dag("COMPLETE"))["status"] == "ignored"
    again = post(dag.task("choose_targets", "COMPLETE", [local("targets.parquet")]))
    assert again["runs"][0]["job_ids"] is None  # the same outputs: nothing queued twice
    run_jobs()
    detail = client.get(f"/api/v1/runs/{dag.run_id}").get_json()
    assert detail["status"] == "classified" and detail["label"] == "campaign"
    totals = client.get(f"/api/v1/runs/{dag.run_id}/reconciliation").get_json()["totals"]
    assert (totals["entered"], totals["targeted"], totals["dropped"], totals["orphaned"]) == (
        10,
        6,
        2,
        2,
    )
    assert all(r["run_id"] != dag.run_id for r in client.get(
        "/api/v1/lineage/pending").get_json()["items"])  # fmt: skip


def test_runs_that_cannot_register_say_why(
    app: Any, engine: Engine, data_root: Path, database_url: str
) -> None:
    define_pipeline(engine, AIRFLOW_PIPELINE, "test")
    client = CheckedClient(app)
    out = data_root / "bad"
    write_parquet(out / "selection.parquet", [{"customer": 1}])  # no client_id column

    def post(event: dict[str, Any]) -> dict[str, Any]:
        response = client.post("/api/v1/lineage", json=event)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["runs"][0]

    s3_only = DagRun()
    waiting = post(s3_only.task("select_clients", "COMPLETE", [("s3://bank-curated", "sel")]))
    reason = next(m for m in waiting["missing"] if m["name"] == "selection")["reason"]
    assert "no output is a Parquet location under the data roots" in reason
    assert "s3://bank-curated:sel" in reason
    outside = DagRun()
    waiting = post(outside.task("select_clients", "COMPLETE", [("file", "/etc/selection")]))
    assert "under the data roots" in waiting["missing"][0]["reason"]
    both = DagRun()
    ambiguous = post(both.task("apply_exclusions", "COMPLETE", [
        ("file", str(out / "a" / "exclusions")), ("file", str(out / "b" / "exclusions"))
    ]))  # fmt: skip
    reason = next(m for m in ambiguous["missing"] if m["name"] == "exclusions")["reason"]
    assert "it wrote 2 datasets" in reason and "make openlineage.output match only one" in reason
    invalid = DagRun()
    post(invalid.task("select_clients", "COMPLETE", [("file", str(out / "selection.parquet"))]))
    post(invalid.task("apply_exclusions", "COMPLETE", [
        ("file", str(out / "exclusions")), ("file", str(out / "trace_main.parquet"))
    ]))  # fmt: skip
    result = post(invalid.task("choose_targets", "COMPLETE", [("file", str(out / "t.parquet"))]))
    assert result["status"] == "invalid" and result["missing"] == []
    assert any("key column 'client_id' is missing" in e for e in result["errors"])
    assert any("run.outputs.exclusions" in e for e in result["errors"])
    # The CLI lists what each run waits for, or why it could not register.
    runner = CliRunner()
    env = {"DATABASE_URL": database_url, "COLUMNS": "200"}
    listed = runner.invoke(main, ["openlineage", "pending", "--json"], env=env)
    statuses = {r["run_id"]: r["status"] for r in json.loads(listed.stdout)["items"]}
    assert statuses[invalid.run_id] == "invalid" and statuses[s3_only.run_id] == "pending"
    table = runner.invoke(
        main, ["openlineage", "pending", "--pipeline", "scheduled_campaign"], env=env
    )
    assert table.exit_code == 0 and s3_only.run_id in table.stdout
    assert "selection:" in table.stdout and "invalid" in table.stdout


def test_malformed_events_are_refused_naming_the_field(app: Any, engine: Engine) -> None:
    define_pipeline(engine, AIRFLOW_PIPELINE, "test")
    client = CheckedClient(app)
    good = DagRun().task("select_clients", "START")
    cases = [
        ({**good, "run": {"runId": "not-a-uuid"}}, "run.runId"),
        ({k: v for k, v in good.items() if k != "eventTime"}, "eventTime"),
        ({**good, "eventTime": "yesterday"}, "eventTime"),
        ({**good, "job": {"namespace": "airflow-prod", "name": ""}}, "job.name"),
        ({**good, "outputs": [{"namespace": "file"}]}, "outputs.0.name"),
        ({**good, "run": {**good["run"], "facets": {"parent": {"job": good["job"]}}}},
         "run.facets.parent.run"),
        ([good], "JSON object"),
        ({}, "run"),
    ]  # fmt: skip
    for body, field in cases:
        response = client.post("/api/v1/lineage", json=body)
        answer = response.get_json()
        assert response.status_code == 400, (field, answer)
        assert any(field in e for e in answer["errors"]), (field, answer)
    not_json = client.post("/api/v1/lineage", data="{", content_type="application/json")
    assert not_json.status_code == 400 and "not valid JSON" in not_json.get_json()["error"]
    zipped = client.post(  # the HTTP transport's `compression: gzip`
        "/api/v1/lineage",
        data=gzip.compress(json.dumps(good).encode()),
        headers={"Content-Encoding": "gzip"},
        content_type="application/json",
    )
    assert zipped.status_code == 200 and zipped.get_json()["status"] == "accepted"
    static = {"eventTime": good["eventTime"], "producer": AIRFLOW, "schemaURL": SPEC_URL,
              "dataset": {"namespace": "file", "name": "/x"}}  # fmt: skip
    assert client.post("/api/v1/lineage", json=static).get_json()["status"] == "ignored"


def test_pipeline_definitions_map_jobs(engine: Engine, database_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"DATABASE_URL": database_url}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"pipeline": {**AIRFLOW_PIPELINE, "name": "scheduled_defined"}}))
    result = runner.invoke(main, ["openlineage", "define", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert "exclusions <- airflow-prod/campaign.apply_exclusions" in result.stdout
    bad = dict(AIRFLOW_PIPELINE, stages=[{"name": "a", "openlineage": {"namespace": "x"}}])
    path.write_text(yaml.safe_dump(bad))
    refused = runner.invoke(main, ["openlineage", "define", str(path)], env=env)
    assert refused.exit_code == 2 and "pipeline.stages.0.openlineage.job" in refused.output
    with pytest.raises(ManifestError) as caught:
        define_pipeline(
            engine, {**AIRFLOW_PIPELINE, "stages": [{"name": "a", "parents": ["b"]}]}, "t"
        )
    assert "'b' names no stage" in str(caught.value.errors)
    # A manifest's stage without a mapping keeps its stored definition unchanged.
    write_parquet(tmp_path / "a.parquet", [{"client_id": 1}])
    manifest = parse_manifest(
        {"pipeline": {"name": "p", "key": "client_id", "stages": [
            {"name": "a", "openlineage": {"namespace": "n", "job": "j"}},
            {"name": "b", "parents": ["a"]},
        ]}, "run": {"id": "r", "outputs": {"a": "a.parquet", "b": "a.parquet"}}},
        base_dir=tmp_path,
    )  # fmt: skip
    assert manifest.pipeline.spec["stages"][1] == {
        "name": "b", "parents": ["a"], "grain": None, "fanout": "none", "split": "copy",
        "columns": {},
    }  # fmt: skip
    assert manifest.pipeline.spec["stages"][0]["openlineage"]["job"] == "j"


def test_pipeline_definitions_are_bounded_like_manifests(engine: Engine) -> None:
    """A definition is parsed as a manifest is: an alias bomb or deep nesting is refused in
    bounded time, naming the source, and nothing is registered."""
    bomb = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb.append("pipeline: {name: bombed, key: client_id, stages: *a9}")
    deep = "pipeline: " + "[" * 100_000 + "]" * 100_000
    with engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(pipelines)).scalar_one()
    for text, fault in (("\n".join(bomb), "more than 100,000 values"), (deep, "nested too")):
        with pytest.raises(ManifestError) as caught:
            define_pipeline(engine, text, "defs.yaml")
        assert caught.value.message.startswith("defs.yaml: ") and fault in caught.value.message
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(pipelines)).scalar_one() == before


def test_events_group_by_their_root_run() -> None:
    """A Spark job launched by an Airflow task names the task as parent and the DAG run as
    root: it belongs with the DAG run's tasks."""
    from tracer.openlineage_in import parse_event

    dag = DagRun()
    task = dag.task("select_clients", "COMPLETE")
    assert parse_event(task).group == dag.run_id  # type: ignore[union-attr]
    spark = {**task, "run": {"runId": str(uuid.uuid4()), "facets": {"parent": {
        "run": {"runId": task["run"]["runId"]},
        "job": {"namespace": "airflow-prod", "name": "campaign.select_clients"},
        "root": {"run": {"runId": dag.run_id}, "job": task["run"]["facets"]["parent"]["job"]},
    }}}}  # fmt: skip
    assert parse_event(spark).group == dag.run_id  # type: ignore[union-attr]
    del spark["run"]["facets"]["parent"]["root"]
    assert parse_event(spark).group == task["run"]["runId"]  # type: ignore[union-attr]
    alone = {**task, "run": {"runId": task["run"]["runId"]}}
    assert parse_event(alone).group == task["run"]["runId"]  # type: ignore[union-attr]
