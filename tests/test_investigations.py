"""Investigations through the API and the CLI: lists that explain themselves, the survey of
runs, comparisons, keys as users write them; every response checked against the served
OpenAPI document, every table checked to show its figures whole."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pytest
from click.testing import CliRunner
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest
from sqlalchemy import Engine, text
from werkzeug.wrappers import Request

from tests.openapi_check import CheckedClient, _Response
from tests.pipelines import RunBuilder
from tests.test_api import manifest_body
from tests.test_render import assert_fits, assert_line, assert_words
from tracer import db, render
from tracer.cli import main
from tracer.manifest import load_manifest
from tracer.queries.anomalies import gap_keys
from tracer.queries.catalog import list_runs
from tracer.queries.reconciliation import reconciliation
from tracer.store import ingest_manifest

LOCAL = "http://localhost"
REPORTED = {"reported": True, "stage": "b", "reason_column": "reason"}
OPERATIONAL = {"reported": False, "stage": "b", "reason_column": "reason"}
TRACE_SCHEMA = pa.schema([("client_id", pa.int64()), ("reason", pa.string())])


def ids(*values: object) -> list[dict[str, object]]:
    return [{"client_id": v} for v in values]


def two_stage(
    build: RunBuilder,
    run_id: str,
    a: list[int],
    b: list[int],
    dropped: list[int] = (),  # type: ignore[assignment]
    pipeline: str | None = None,
) -> str:
    """Stages a -> b; `dropped` logged as dropped at b in a reported source."""
    path = build.manifest(
        [{"name": "a"}, {"name": "b"}],
        {"a": ids(*a), "b": ids(*b)},
        trace={"t": (REPORTED, [{"client_id": i, "reason": "opted_out"} for i in dropped])},
        run_id=run_id,
        schemas={"t": TRACE_SCHEMA},
    )
    if pipeline:
        spec = json.loads(path.read_text())
        spec["pipeline"]["name"] = pipeline
        path.write_text(json.dumps(spec))
    return ingest_manifest(build.engine, load_manifest(path))


def local(url: str) -> str:
    return url.removeprefix(LOCAL)


# --- the core ------------------------------------------------------------------------------


def test_the_survey_orders_runs_by_distance_from_reconciling(build: RunBuilder) -> None:
    p = "survey"
    clean = two_stage(build, "survey-clean", [1, 2, 3], [1, 2], dropped=[3], pipeline=p)
    lost = two_stage(build, "survey-lost", [1, 2, 3, 4], [1, 2], dropped=[3], pipeline=p)
    worse = two_stage(build, "survey-worse", [1, 2, 3, 4, 5, 6], [1], dropped=[2], pipeline=p)
    with build.engine.connect() as conn:
        page = list_runs(conn, pipeline=p, sort="distance", limit=2)
        rest = list_runs(conn, pipeline=p, sort="distance", limit=2, after=page["next"])
        broken = list_runs(conn, pipeline=p, reconciles=False)
    order = [r["run_id"] for r in page["items"] + rest["items"]]
    assert order == [worse, lost, clean]
    figures = {r["run_id"]: r["figures"] for r in page["items"] + rest["items"]}
    # 4 orphaned (stage, key) pairs + |gap 4| + |reporting gap 4|
    assert figures[worse]["distance"] == 12 and figures[worse]["anomalies"]["orphaned"] == 4
    assert figures[worse]["failed_conditions"] == ["4 orphaned keys", "gap 4", "reporting gap 4"]
    assert figures[clean] == {
        "entered": 3, "targeted": 2, "traced": 1, "traced_reported": 1, "gap": 0,
        "reporting_gap": 0, "null_key_rows": 0,
        "anomalies": dict.fromkeys(figures[clean]["anomalies"], 0),
        "reconciles": True, "failed_conditions": [], "distance": 0,
    }  # fmt: skip
    assert {r["run_id"] for r in broken["items"]} == {worse, lost}


def test_cause_splits_sum_to_their_cells_and_page_through_the_index(build: RunBuilder) -> None:
    """A stage that legitimately keeps one offer per client fills `counted_twice`; its cause
    (partially_dropped there) tells those keys from the one counted twice by a defect."""
    offers = [{"client_id": c, "offer": o} for c in range(1, 41) for o in (1, 2)]
    kept = [{"client_id": c, "offer": 1} for c in range(1, 41)]
    trace = [{"client_id": c, "offer": 2, "reason": "one_offer"} for c in range(1, 41)]
    trace.append({"client_id": 41, "offer": 1, "reason": "excluded"})  # and yet targeted
    grain = ["client_id", "offer"]
    run = build.run(
        stages=[{"name": "a"}, {"name": "b", "grain": grain}, {"name": "c", "grain": grain}],
        outputs={
            "a": ids(*range(1, 43)),
            "b": [*offers, {"client_id": 41, "offer": 1}, {"client_id": 42, "offer": 1}],
            "c": [*kept, {"client_id": 41, "offer": 1}],
        },
        trace={"t": ({"reported": True, "stage": "c", "reason_column": "reason"}, trace)},
    )
    report = build.report(run)
    cell = next(c for c in report["gap_cells"] if c["cell"] == "counted_twice")
    assert cell["causes"] == [
        {"stage": "c", "outcome": "partially_dropped", "keys": 40},
        {"stage": "c", "outcome": "conflict", "keys": 1},
    ]
    for c in report["gap_cells"] + report["reporting_gap_cells"]:
        assert sum(cause["keys"] for cause in c["causes"]) == c["keys"]
    with build.engine.connect() as conn:
        defect = gap_keys(conn, run, "counted_twice", outcome="conflict")
        assert [i["key"] for i in defect["items"]] == [{"client_id": 41}]
        assert defect["items"][0]["reasons"][0]["reason"] == "excluded"
        assert defect["total"] == 1
        # In cause order (stage, outcome), then key: the conflict comes after the 40.
        page = gap_keys(conn, run, "counted_twice", limit=39)
        rest = gap_keys(conn, run, "counted_twice", after=page["next"])
        assert [i["outcome"] for i in rest["items"]] == ["partially_dropped", "conflict"]
        assert page["total"] == 41
        # However big the run, the page is a range of the cell's index: no scan, no sort.
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                text(
                    "EXPLAIN SELECT key FROM key_outcomes WHERE run_pk = :pk AND traced "
                    "AND entered AND targeted ORDER BY cause_stage, cause_outcome, key LIMIT 10"
                ),
                {"pk": _pk(conn, run)},
            )
        )
    assert "Index Scan using ix_key_outcomes_" in plan and "Sort" not in plan, plan


def test_the_targeted_cell_has_no_cause_and_pages_by_key(build: RunBuilder) -> None:
    run = two_stage(build, "cell-targeted", [1, 2, 3], [1, 2, 3])
    with build.engine.connect() as conn:
        first = gap_keys(conn, run, "targeted", limit=2)
        second = gap_keys(conn, run, "targeted", limit=2, after=first["next"])
    assert [i["key"] for i in first["items"] + second["items"]] == ids(1, 2, 3)
    assert {(i["stage"], i["outcome"]) for i in first["items"]} == {(None, None)}
    assert first["total"] == 3 and second["next"] is None


def _pk(conn: Any, run_id: str) -> int:
    return conn.execute(text("SELECT pk FROM runs WHERE run_id = :r"), {"r": run_id}).scalar()


def test_0004_backfills_causes_codes_and_cells(scratch: Engine, tmp_path: Path) -> None:
    """Runs classified before 0004 get the causes, codes and cells classification now gives."""
    from alembic import command

    db.upgrade(scratch)
    run = RunBuilder(tmp_path, scratch).run(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": ids(1, 2, 3, 4, 6), "b": ids(1, 2, 5, 6)},
        trace={
            "rep": (REPORTED, [{"client_id": i, "reason": "r"} for i in (2, 3)]),
            "ops": (OPERATIONAL, [{"client_id": i, "reason": "o"} for i in (6, 7)]),
        },
    )
    columns = (
        "k.key, p.codes, cause_stage, cause_outcome, reporting_cause_stage, "
        "reporting_cause_outcome FROM key_outcomes k JOIN key_patterns p "
        "ON p.run_pk = k.run_pk AND p.pattern = k.pattern"
    )

    def stored() -> tuple[list[Any], Any]:
        with scratch.connect() as conn:
            rows = conn.execute(text(f"SELECT {columns} ORDER BY k.key")).all()
            cells = conn.execute(text("SELECT gap_cells FROM runs")).scalar()
        return [tuple(r) for r in rows], cells

    classified = stored()
    assert classified[0][0] == ("1", "AB", None, None, None, None)
    config = db.alembic_config(scratch)
    command.downgrade(config, "0004-1")
    with scratch.connect() as conn:
        cells = conn.execute(text("SELECT gap_cells FROM runs")).scalar()
    assert all("causes" not in c for c in cells["gap_cells"])
    assert all(c["contribution"] != 0 for c in cells["gap_cells"])
    db.upgrade(scratch)
    assert stored() == classified
    with scratch.connect() as conn:
        assert reconciliation(conn, run)["gap_cells"]


# --- the API ---------------------------------------------------------------------------------


@pytest.fixture
def client(app: Any) -> CheckedClient:
    return CheckedClient(app)


def test_api_comparison_and_its_cells(client: CheckedClient, build: RunBuilder) -> None:
    a = two_stage(build, "api-cmp-a", [1, 2, 3, 4], [1, 2, 3], pipeline="api-cmp")
    b = two_stage(build, "api-cmp-b", [1, 2, 3, 4, 5], [1, 3, 5], dropped=[2], pipeline="api-cmp")
    summary = client.get(f"/api/v1/runs/{a}/compare/{b}").get_json()
    assert summary["changed_keys"] == 2  # 2: targeted -> dropped; 5: new
    cells = {(m["a"], m["b"]): m["keys"] for m in summary["matrix"]}
    assert cells[("targeted", "dropped")] == 1 and cells[("absent", "targeted")] == 1
    assert [f["stage"] for f in summary["first_differences"]] == ["a", "b"]
    page = client.get(f"/api/v1/runs/{a}/compare/{b}/keys?a=targeted&b=dropped").get_json()
    assert page["total"] == 1 and page["items"][0]["key"] == {"client_id": 2}
    assert page["items"][0]["first_difference"] == {"stage": "b", "a": "passed", "b": "dropped"}
    journeys = page["items"][0]["journey_urls"]
    assert client.get(local(journeys["b"])).get_json()["final_outcome"] == "dropped"
    new = client.get(f"/api/v1/runs/{a}/compare/{b}/keys?a=absent&b=targeted").get_json()
    assert new["items"][0]["journey_urls"]["a"] is None
    empty = client.get(f"/api/v1/runs/{a}/compare/{b}/keys?a=dropped&b=dropped&format=csv")
    assert empty.mimetype == "text/csv"
    assert list(csv.reader(io.StringIO(empty.get_data(as_text=True)))) == [
        ["client_id", "a", "b", "first_difference_stage", "first_difference_a",
         "first_difference_b"]
    ]  # fmt: skip
    other = two_stage(build, "api-cmp-other", [1], [1])
    refused = client.get(f"/api/v1/runs/{a}/compare/{other}")
    assert refused.status_code == 400 and "different pipelines" in refused.get_json()["error"]


def test_api_rerun_reconciliation_links_its_comparison(
    client: CheckedClient, build: RunBuilder
) -> None:
    first = two_stage(build, "api-orig", [1, 2, 3], [1, 2, 3], pipeline="api-rerun")
    path = build.manifest(
        [{"name": "a"}, {"name": "b"}], {"a": ids(1, 2, 3), "b": ids(1, 2)}, run_id="api-again"
    )
    spec = json.loads(path.read_text())
    spec["pipeline"]["name"] = "api-rerun"
    spec["run"]["rerun_of"] = first
    path.write_text(json.dumps(spec))
    rerun = ingest_manifest(build.engine, load_manifest(path))
    report = client.get(f"/api/v1/runs/{rerun}/reconciliation").get_json()
    assert report["rerun"]["changed_keys"] == 1
    assert report["rerun"]["url"] == f"{LOCAL}/api/v1/runs/{first}/compare/{rerun}"
    assert client.get(local(report["rerun"]["url"])).get_json()["changed_keys"] == 1
    history = client.get("/api/v1/history/3?pipeline=api-rerun").get_json()["items"]
    assert [(h["run"]["run_id"], h["left_at"]) for h in history] == [
        (rerun, {"stage": "b", "outcome": "orphaned"}),
        (first, None),
    ]


def test_api_lists_explain_themselves_and_stream_csv(
    client: CheckedClient, build: RunBuilder
) -> None:
    run = two_stage(build, "api-explain", [1, 2, 3, 4], [1], dropped=[2, 3])
    page = client.get(f"/api/v1/runs/{run}/anomalies?outcome=dropped&limit=1").get_json()
    assert page["total"] == 2
    item = page["items"][0]
    assert (item["stage"], item["outcome"], item["final_outcome"]) == ("b", "dropped", "dropped")
    assert item["reasons"] == [{"source": "t", "reason": "opted_out", "rows": 1, "reported": True}]
    assert client.get(local(item["journey_url"])).get_json()["key"] == item["key"]
    assert client.get(local(page["next_url"])).get_json()["items"][0]["key"] == {"client_id": 3}
    lost = client.get(f"/api/v1/runs/{run}/gap_cells/lost/keys").get_json()
    assert lost["items"][0]["stage"] == "b" and lost["items"][0]["outcome"] == "orphaned"
    for url, header in (
        (f"/api/v1/runs/{run}/anomalies?outcome=collapsed&format=csv",
         ["stage", "client_id", "rows_in", "rows_out", "rows_dropped", "extra_rows", "outcome",
          "final_outcome", "reasons"]),
        (f"/api/v1/runs/{run}/gap_cells/neither/keys?format=csv",
         ["client_id", "stage", "outcome", "final_outcome", "reasons"]),
    ):  # fmt: skip
        empty = client.get(url)
        assert list(csv.reader(io.StringIO(empty.get_data(as_text=True)))) == [header], url
    rows = list(csv.reader(io.StringIO(client.get("/api/v1/runs?format=csv").get_data(True))))
    assert rows[0][:2] == ["run_id", "pipeline"] and run in [r[0] for r in rows[1:]]
    survey = client.get("/api/v1/runs?reconciles=false&sort=distance&limit=500").get_json()
    distances = [r["figures"]["distance"] for r in survey["items"]]
    assert distances == sorted(distances, reverse=True) and 0 not in distances


def escaped_get(client: CheckedClient, url: str) -> Any:
    """GET a path whose last segment may hold an escaped `/` (%2F), checked against the
    document like every answer: openapi-core matches paths after unescaping, so the check
    finds the operation through the same path with a plain last segment."""
    response = client.client.get(url, headers={})
    stand_in = Request.from_values(url.rsplit("/", 1)[0] + "/x", method="GET")
    client.openapi.validate_response(WerkzeugOpenAPIRequest(stand_in), _Response(response))
    return response


def test_api_keys_as_users_write_them(client: CheckedClient, build: RunBuilder) -> None:
    awkward = ["a/b", "x y", "Zürich-7", "50%"]
    run = build.run(
        [{"name": "a"}], {"a": ids(*awkward)}, key_types={"client_id": "string"}, run_id="keys-1"
    )
    for key in awkward:
        escaped = quote(key, safe="")
        answer = escaped_get(client, f"/api/v1/runs/{run}/journeys/{escaped}")
        assert answer.status_code == 200 and answer.get_json()["key"] == {"client_id": key}
        by_query = client.get(f"/api/v1/runs/{run}/journeys?key={escaped}")
        assert by_query.get_json()["key"] == {"client_id": key}
        history = escaped_get(client, f"/api/v1/history/{escaped}").get_json()
        assert history["items"][0]["key"] == {"client_id": key}
    composite = build.run(
        [{"name": "a"}],
        {"a": [{"branch": "INV-A", "client_no": 7001}, {"branch": "INV-B", "client_no": 7001}]},
        key=["branch", "client_no"],
        run_id="keys-2",
    )
    named = client.get(f"/api/v1/runs/{composite}/journeys?client_no=7001&branch=INV-A").get_json()
    assert named["key"] == {"branch": "INV-A", "client_no": 7001}
    assert client.get("/api/v1/history?branch=INV-B&client_no=7001").get_json()["items"]
    for url, field in (
        (f"/api/v1/runs/{composite}/journeys?branch=INV-A", "client_no"),
        (f"/api/v1/runs/{composite}/journeys?branch=INV-A&client_no=7001&office=1", "office"),
        (f"/api/v1/runs/{composite}/journeys?branch=INV-A&client_no=x", "client_no"),
    ):
        refused = client.get(url)
        assert refused.status_code == 400 and field in refused.get_json()["error"], url
    # `latest`: the newest classified run of a pipeline, for any run resource.
    pipeline = client.get(f"/api/v1/runs/{composite}").get_json()["pipeline"]
    latest = client.get(f"/api/v1/pipelines/{pipeline}/runs/latest").get_json()
    assert latest["run_id"] == composite
    moved = client.get(f"/api/v1/pipelines/{pipeline}/runs/latest/reconciliation")
    assert moved.status_code == 307
    assert moved.headers["Location"].endswith(f"/api/v1/runs/{composite}/reconciliation")


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def invoke(database_url: str) -> Any:
    runner = CliRunner()

    def run(width: int | None, *args: str, code: int = 0, **more: str | None) -> str:
        env = {"DATABASE_URL": database_url, "COLUMNS": None if width is None else str(width)}
        env |= {"REDIS_URL": None, **more}
        result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.stdout if code == 0 else result.output

    return run


@pytest.mark.parametrize("width", [80, 120, None])
def test_cli_compare_runs_and_pipelines_show_every_figure(
    invoke: Any, build: RunBuilder, width: int | None
) -> None:
    p = f"cli-cmp-{width}"
    a = two_stage(build, f"{p}-a", list(range(1, 2001)), list(range(1, 1901)), pipeline=p)
    b = two_stage(build, f"{p}-b", list(range(1, 2001)), list(range(1, 1801)),
                  dropped=list(range(1801, 1851)), pipeline=p)  # fmt: skip
    data = json.loads(invoke(width, "compare", a, b, "--json"))
    shown = invoke(width, "compare", a, b)
    assert_fits(shown, width)
    assert_words(shown, f"{render.figure(data['changed_keys'])} clients changed")
    for m in data["matrix"]:
        assert_line(shown, m["a"], m["b"], render.figure(m["keys"]))
    cell = json.loads(invoke(width, "compare", a, b, "--cell", "targeted", "dropped", "--all",
                             "--json"))  # fmt: skip
    assert [i["key"]["client_id"] for i in cell] == list(range(1801, 1851))
    listed = invoke(width, "compare", a, b, "--cell", "targeted", "orphaned", "--limit", "5")
    assert_line(listed, "1851", "b", "passed", "orphaned")
    csv_text = invoke(width, "compare", a, b, "--cell", "dropped", "dropped", "--csv")
    assert csv_text.splitlines() == [
        "client_id,a,b,first_difference_stage,first_difference_a,first_difference_b"
    ]
    survey = json.loads(invoke(width, "runs", "--pipeline", p, "--json"))
    assert [r["run_id"] for r in survey["items"]] == [b, a]  # b is further from reconciling
    table = invoke(width, "runs", "--pipeline", p)
    assert_fits(table, width)
    for r in survey["items"]:
        for name in ("entered", "targeted", "traced", "distance"):
            assert render.figure(r["figures"][name]) in table
        for condition in r["figures"]["failed_conditions"]:
            assert_words(table, condition)
    assert invoke(width, "runs", "--pipeline", p, "--csv").splitlines()[0].startswith("run_id,")
    pipes = invoke(width, "pipelines", "--limit", "500")
    assert_fits(pipes, width)
    refused = invoke(width, "compare", a, "no-such-run", code=2)
    assert "no-such-run" in refused


def test_cli_jobs_shows_each_job_of_a_run(
    invoke: Any, app: Any, api_config: Any, data_root: Path, engine: Engine, run_jobs: Any
) -> None:
    path = RunBuilder(data_root, engine).manifest(
        [{"name": "a"}, {"name": "b"}], {"a": ids(1, 2), "b": ids(1)}, run_id="cli-jobs"
    )
    posted = CheckedClient(app).post("/api/v1/runs", json=manifest_body(path)).get_json()
    queue = {"REDIS_URL": api_config.redis_url, "TRACER_QUEUE_PREFIX": api_config.queue_prefix}
    queued = json.loads(invoke(None, "jobs", "cli-jobs", "--json", **queue))
    assert [j["id"] for j in queued["jobs"]] == [
        *posted["job_ids"]["ingest"],
        posted["job_ids"]["classify"],
    ]
    assert {j["status"] for j in queued["jobs"]} <= {"queued", "deferred"}
    run_jobs()
    done = json.loads(invoke(None, "jobs", "cli-jobs", "--json", **queue))
    assert [j["status"] for j in done["jobs"]] == ["finished"] * 3
    table = invoke(80, "jobs", "cli-jobs", **queue)
    assert_fits(table, 80)
    for j in done["jobs"]:
        assert_line(table, j["id"], *j["for"].split()[:1])
    refused = invoke(80, "jobs", "cli-jobs", code=2)
    assert "REDIS_URL" in refused
