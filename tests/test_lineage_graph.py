"""Lineage graphs of a run and of a client's journey, and their exports parsed back: the JSON
in Marquez's lineage shape, GraphML through networkx, DOT through pydot."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import networkx as nx
import pydot
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from tests.openapi_check import CheckedClient
from tests.pipelines import RunBuilder
from tracer.cli import main
from tracer.lineage_graph import (
    flatten,
    journey_graph,
    run_graph,
    to_dot,
    to_graphml,
    to_marquez,
)

STAGES = [
    {"name": "selection"},
    {"name": "exclusions", "split": "route"},
    {"name": "email", "parents": ["exclusions"]},
    {"name": "sms", "parents": ["exclusions"]},
    {"name": "merge", "parents": ["email", "sms"]},
]
TRACE_MAIN = {"reported": True, "stage_column": "stage", "reason_column": "reason"}
BUFFER = {"reported": False, "stage": "exclusions", "reason_column": "reason"}
PIPELINE = "p-graph-run"


@pytest.fixture(scope="module")
def run_id(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> str:
    """20 clients: 2 dropped with a reported reason, 1 logged only operationally, 3
    orphaned at exclusions, 1 routed to no branch, 1 multiplied and 1 logged as dropped yet
    targeted at the merge, and 1 client appearing there from nowhere."""
    build = RunBuilder(tmp_path_factory.mktemp("graph"), engine)
    return build.run(
        stages=STAGES,
        outputs={
            "selection": [{"client_id": i} for i in range(1, 21)],
            "exclusions": [{"client_id": i} for i in range(1, 15)],
            "email": [{"client_id": i} for i in range(1, 8)],
            "sms": [{"client_id": i} for i in range(8, 14)],
            "merge": [{"client_id": i} for i in [*range(1, 14), 1, 99]],
        },
        trace={
            "trace_main": (
                TRACE_MAIN,
                [
                    {"client_id": 15, "stage": "exclusions", "reason": "opted_out"},
                    {"client_id": 16, "stage": "exclusions", "reason": "deceased"},
                    {"client_id": 5, "stage": "merge", "reason": "blocked"},
                ],
            ),
            "buffer": (BUFFER, [{"client_id": 17, "reason": "buffer"}]),
        },
        run_id="graph-run",
    )


def _stage_nodes(graph: nx.DiGraph) -> list[str]:
    return [n for n, a in graph.nodes(data=True) if a["type"] == "JOB"]


def test_run_graph_carries_the_reconciliation(engine: Engine, run_id: str) -> None:
    from tracer.queries.reconciliation import reconciliation

    with engine.connect() as conn:
        graph = run_graph(conn, run_id)
        report = reconciliation(conn, run_id)
    order = ["selection", "exclusions", "email", "sms", "merge"]
    assert _stage_nodes(graph) == [f"stage:{PIPELINE}:{s}" for s in order]  # pipeline order
    for summary in report["stages"]:
        data = graph.nodes[f"stage:{PIPELINE}:{summary['stage']}"]["data"]
        assert data["outcomes"] == summary["outcomes"]
        assert data["rows"] == summary["rows"] and data["flags"] == summary["flags"]
    exclusions = graph.nodes[f"stage:{PIPELINE}:exclusions"]["data"]
    assert exclusions["drops"] == {
        "rows_reported": 2, "rows_operational": 1, "keys_reported": 2, "keys_operational": 1
    }  # fmt: skip
    # Each stage's share of the gaps, by cause stage; together they are the run's gaps.
    gaps = {s: graph.nodes[f"stage:{PIPELINE}:{s}"]["data"]["gap_contribution"] for s in order}
    totals = report["totals"]
    assert sum(g["gap"] for g in gaps.values()) == totals["gap"] == 2
    assert sum(g["reporting_gap"] for g in gaps.values()) == totals["reporting_gap"] == 3
    assert gaps["exclusions"]["cells"] == {"lost": 3}  # the orphans (17 is traced)
    assert gaps["exclusions"]["reporting_cells"] == {"lost": 4}  # 17 only operationally
    assert gaps["sms"]["cells"] == {"lost": 1}  # 14 left at the last branch it was offered
    assert gaps["merge"]["cells"] == {"counted_twice": -1, "targeted_without_entering": -1}

    # Datasets: each stage's output after it, traceability datasets after the stages they
    # log; edges stage -> output -> child, stage -> traceability.
    relations = Counter(d["relation"] for _, _, a in graph.edges(data=True) for d in [a["data"]])
    assert relations == {"output": 5, "input": 5, "traceability": 3}
    trace = next(n for n, a in graph.nodes(data=True) if a["data"].get("dataset") == "trace_main")
    assert graph.nodes[trace]["data"]["reported"] is True
    assert graph.edges[f"stage:{PIPELINE}:exclusions", trace]["data"]["rows"] == 2
    # At a merge each input edge carries what its parent offered; elsewhere what the child read.
    merge = f"stage:{PIPELINE}:merge"
    offered = {
        graph.nodes[u]["data"]["dataset"]: a["data"]["rows"]
        for u, _, a in graph.in_edges(merge, data=True)
    }
    assert offered == {"email": 7, "sms": 6}
    email = f"stage:{PIPELINE}:email"
    assert [a["data"]["rows"] for _, _, a in graph.in_edges(email, data=True)] == [8]
    assert graph.graph["gap"] == 2 and graph.graph["reconciles"] is False


def _check_marquez(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Ids unique, every edge between existing nodes and listed at both of its ends."""
    nodes = document["graph"]
    ids = [n["id"] for n in nodes]
    assert len(ids) == len(set(ids)), "duplicate node ids"
    by_id = {n["id"]: n for n in nodes}
    for node in nodes:
        assert set(node) == {"id", "type", "data", "inEdges", "outEdges"}
        for edge in node["inEdges"]:
            assert edge["destination"] == node["id"] and edge["origin"] in by_id
            assert edge in by_id[edge["origin"]]["outEdges"]
        for edge in node["outEdges"]:
            assert edge["origin"] == node["id"] and edge["destination"] in by_id
            assert edge in by_id[edge["destination"]]["inEdges"]
    return by_id


def test_json_export_in_marquez_shape(engine: Engine, run_id: str) -> None:
    with engine.connect() as conn:
        document = json.loads(json.dumps(to_marquez(run_graph(conn, run_id))))
        journey = json.loads(json.dumps(to_marquez(journey_graph(conn, run_id, ["5"]))))
    by_id = _check_marquez(document)
    assert {n["type"] for n in document["graph"]} == {"JOB", "DATASET"}
    assert by_id[f"stage:{PIPELINE}:sms"]["data"]["outcomes"]["orphaned"] == 1
    datasets = [n for n in document["graph"] if n["type"] == "DATASET"]
    assert all(n["id"] == f"dataset:file:{n['data']['name']}" for n in datasets)
    assert all(n["data"]["namespace"] == "file" for n in datasets)

    records = _check_marquez(journey)
    stages = ["selection", "exclusions", "email", "merge"]
    assert list(records) == [f"record:{PIPELINE}:graph-run:{s}:5" for s in stages]
    merge = records[f"record:{PIPELINE}:graph-run:merge:5"]
    assert merge["type"] == "RECORD" and merge["data"]["outcome"] == "conflict"
    assert merge["data"]["reasons"] == [
        {"source": "trace_main", "reason": "blocked", "rows": 1, "reported": True}
    ]
    assert [e["origin"] for e in merge["inEdges"]] == [f"record:{PIPELINE}:graph-run:email:5"]


def test_graphml_round_trips_through_networkx(engine: Engine, run_id: str) -> None:
    with engine.connect() as conn:
        for graph in (run_graph(conn, run_id), journey_graph(conn, run_id, [15])):
            parsed = nx.parse_graphml(to_graphml(graph))
            assert isinstance(parsed, nx.DiGraph)
            assert list(parsed.nodes) == list(graph.nodes)
            assert set(parsed.edges) == set(graph.edges)
            for node, attrs in graph.nodes(data=True):
                # Every figure comes back with its type (ints as ints, flags as booleans).
                assert parsed.nodes[node] == {"type": attrs["type"], **flatten(attrs["data"])}
            for u, v, attrs in graph.edges(data=True):
                assert parsed.edges[u, v] == flatten(attrs["data"])
    node = parsed.nodes[f"record:{PIPELINE}:graph-run:exclusions:15"]
    assert node["outcome"] == "dropped" and node["rows_dropped_reported"] == 1


def test_dot_parses_with_pydot(engine: Engine, run_id: str) -> None:
    with engine.connect() as conn:
        graph = run_graph(conn, run_id)
        journey = journey_graph(conn, run_id, [14])
    for built in (graph, journey):
        (parsed,) = pydot.graph_from_dot_data(to_dot(built))
        names = [n.get_name().strip('"') for n in parsed.get_nodes()]
        assert [n for n in names if n not in ("node", "edge", "graph")] == list(built.nodes)
        edges = {
            (e.get_source().strip('"'), e.get_destination().strip('"')) for e in parsed.get_edges()
        }
        assert edges == set(built.edges)
    sms = parsed.get_node(f'"record:{PIPELINE}:graph-run:sms:14"')[0]
    assert sms.get("color").strip('"') == "red" and "orphaned" in sms.get("label")
    (run_dot,) = pydot.graph_from_dot_data(to_dot(graph))
    merge = run_dot.get_node(f'"stage:{PIPELINE}:merge"')[0]
    assert merge.get('"outcomes.multiplied"').strip('"') == "1"


def test_cli_exports_each_format(
    engine: Engine, database_url: str, run_id: str, tmp_path: Path
) -> None:
    runner = CliRunner()

    def tracer(*args: str) -> Any:
        env = {"DATABASE_URL": database_url}
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    result = tracer("graph", run_id)
    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        assert json.loads(result.stdout) == json.loads(
            json.dumps(to_marquez(run_graph(conn, run_id)))
        )
    target = tmp_path / "run.graphml"
    result = tracer("graph", run_id, "--format", "graphml", "-o", str(target))
    assert result.exit_code == 0 and "nodes" in result.stdout
    assert nx.parse_graphml(target.read_text()).number_of_nodes() == 12
    result = tracer("graph", run_id, "16", "--format", "dot")
    assert result.exit_code == 0 and result.stdout.startswith("digraph")
    assert pydot.graph_from_dot_data(result.stdout)
    for args, message in (
        (("graph", "no-such-run"), "not found"),
        (("graph", run_id, "404"), "no record"),
        (("graph", run_id, "abc"), "client_id"),
    ):
        failed = tracer(*args)
        assert failed.exit_code == 2 and message in failed.output, failed.output
    assert tracer("graph", run_id, "--format", "png").exit_code == 2


def test_api_exports_each_format(app: Any, engine: Engine, run_id: str) -> None:
    client = CheckedClient(app)
    answer = client.get(f"/api/v1/lineage?run={run_id}")
    assert answer.status_code == 200
    with engine.connect() as conn:
        assert answer.get_json() == json.loads(json.dumps(to_marquez(run_graph(conn, run_id))))
    journey = client.get(f"/api/v1/lineage?run={run_id}&key=5").get_json()
    assert [n["id"].rsplit(":", 2)[1] for n in _check_marquez(journey).values()] == [
        "selection", "exclusions", "email", "merge"
    ]  # fmt: skip
    graphml = client.get(f"/api/v1/lineage?run={run_id}&format=graphml")
    assert graphml.mimetype == "application/graphml+xml"
    assert nx.parse_graphml(graphml.get_data(as_text=True)).number_of_edges() == 13
    dot = client.get(f"/api/v1/lineage?run={run_id}&key=5&format=dot")
    assert (
        dot.mimetype == "text/vnd.graphviz"
        and "graph-run-5.gv" in dot.headers["Content-Disposition"]
    )
    assert pydot.graph_from_dot_data(dot.get_data(as_text=True))
    for url, status in (
        ("/api/v1/lineage?run=nope", 404),
        (f"/api/v1/lineage?run={run_id}&key=404", 404),
        (f"/api/v1/lineage?run={run_id}&key=x", 400),
        (f"/api/v1/lineage?run={run_id}&format=png", 400),
        ("/api/v1/lineage", 400),
    ):
        response = client.get(url)
        body = response.get_json()
        assert response.status_code == status and body["ok"] is False, (url, body)
