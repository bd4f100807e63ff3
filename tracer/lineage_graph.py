"""A run, or one client's journey through it, as a networkx graph; exported as JSON in the
node/edge shape of Marquez's lineage API, as GraphML (Gephi, yEd, networkx) or as DOT.

The run graph has a node per stage in pipeline order (`stage:<pipeline>:<stage>`, type
JOB), each followed by the datasets it writes (`dataset:<namespace>:<name>`, type
DATASET, named as OpenLineage names them so the graph joins the events
tracer.openlineage_out sends). Edges go stage -> its output -> each child stage, and
stage -> the traceability datasets that log its drops; nodes and edges carry the run's
figures. A journey graph has a node per stage the client touched
(`record:<pipeline>:<run>:<stage>:<key>`, type RECORD) and edges along its path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import networkx as nx
from sqlalchemy import Connection, select

from tracer.errors import TracerError
from tracer.graph import StageGraph, build_graph
from tracer.model import DatasetRole
from tracer.outcomes import RUN_BREAKERS
from tracer.queries.common import RunInfo, load_run
from tracer.queries.journey import journey
from tracer.queries.reconciliation import reconciliation
from tracer.queries.stage_figures import gap_contributions, source_drops, stage_drops
from tracer.tables import datasets, runs

JOB, DATASET, RECORD = "JOB", "DATASET", "RECORD"
ANOMALOUS = frozenset(o.label for o in RUN_BREAKERS)


def dataset_name(uri: str) -> tuple[str, str]:
    """(namespace, name) of a dataset location, after OpenLineage's naming conventions:
    `file` and the absolute path for local files, `s3://bucket` and the key for S3."""
    if "://" not in uri:
        return "file", uri.rstrip("/") or "/"
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return "file", parts.path.rstrip("/") or "/"
    path = parts.path.rstrip("/")
    if parts.scheme in ("s3", "s3a", "gs", "wasbs", "abfss"):
        path = path.lstrip("/")
    return f"{parts.scheme}://{parts.netloc}", path or "/"


def stage_id(pipeline: str, stage: str) -> str:
    return f"stage:{pipeline}:{stage}"


def dataset_id(uri: str) -> str:
    namespace, name = dataset_name(uri)
    return f"dataset:{namespace}:{name}"


def record_id(pipeline: str, run_id: str, stage: str, key: str) -> str:
    return f"record:{pipeline}:{run_id}:{stage}:{key}"


def key_text(key: dict[str, Any]) -> str:
    """A key in an id: its values in key-column order, `|`-separated (as the CLI prints it)."""
    return "|".join(str(v) for v in key.values())


def stage_structure(conn: Connection, run: RunInfo) -> tuple[StageGraph, list[dict[str, Any]]]:
    """The run's stage DAG and traceability sources, from the definition it was ingested with."""
    spec = conn.execute(select(runs.c.manifest["pipeline"]).where(runs.c.pk == run.pk)).scalar_one()
    problems: list[str] = []
    graph = build_graph([(s["name"], s.get("parents")) for s in spec["stages"]], problems.append)
    if graph is None:  # validated at ingestion: cannot happen for a stored run
        raise TracerError(
            f"run {run.run_id!r}: stored stage graph is invalid: {'; '.join(problems)}"
        )
    return graph, list(spec.get("traceability", []))


def run_graph(conn: Connection, run_id: str) -> nx.DiGraph:
    """Stages and datasets of a classified run, with its figures on every node and edge."""
    report = reconciliation(conn, run_id)
    run = load_run(conn, run_id)
    structure, sources = stage_structure(conn, run)
    by_stage = {s["stage"]: s for s in report["stages"]}
    by_source = source_drops(conn, run)
    drops = stage_drops(conn, run, by_source)
    gaps = gap_contributions(conn, run)
    stored = {
        (r.role, r.name): r
        for r in conn.execute(
            select(
                datasets.c.name,
                datasets.c.role,
                datasets.c.uri,
                datasets.c.row_count,
                datasets.c.key_count,
                datasets.c.duplicate_rows,
                datasets.c.status,
            ).where(datasets.c.run_pk == run.pk)
        )
    }
    graph = nx.DiGraph(
        name=f"{run.pipeline} run {run.run_id}",
        pipeline=run.pipeline,
        run_id=run.run_id,
        reconciles=report["totals"]["reconciles"],
        gap=report["totals"]["gap"],
        reporting_gap=report["totals"]["reporting_gap"],
    )
    trace_edges: dict[str, list[tuple[str, int, int]]] = {}  # stage -> (source, rows, keys)
    for d in by_source:
        trace_edges.setdefault(d.stage, []).append((d.source, d.rows, d.keys))
    for t in sources:  # a source with a fixed stage logs it, even with no row this run
        if t.get("stage") and t["name"] not in {s for s, _, _ in trace_edges.get(t["stage"], [])}:
            trace_edges.setdefault(t["stage"], []).append((t["name"], 0, 0))
    reported = run.layout.reported

    def add_dataset(role: DatasetRole, name: str, **extra: Any) -> str:
        row = stored[(role, name)]
        node = dataset_id(row.uri)
        if node not in graph:
            namespace, ol_name = dataset_name(row.uri)
            graph.add_node(
                node,
                type=DATASET,
                data={
                    "namespace": namespace,
                    "name": ol_name,
                    "uri": row.uri,
                    "dataset": name,
                    "role": str(role),
                    **extra,
                    "row_count": row.row_count,
                    "key_count": row.key_count,
                    "duplicate_rows": row.duplicate_rows,
                    "status": row.status,
                },
            )
        return node

    for stage in structure.order:
        s = by_stage[stage]
        node = stage_id(run.pipeline, stage)
        graph.add_node(
            node,
            type=JOB,
            data={
                "namespace": run.pipeline,
                "name": stage,
                "run_id": run.run_id,
                "index": structure.index[stage],
                "parents": list(structure.parents[stage]),
                "outcomes": s["outcomes"],
                "rows": s["rows"],
                "totals": s["totals"],
                "drops": drops[stage],
                "flags": s["flags"],
                "gap_contribution": gaps[stage],
            },
        )
        output = add_dataset(DatasetRole.OUTPUT, stage, stage=stage)
        graph.add_edge(
            node,
            output,
            data={
                "relation": "output",
                "keys": s["totals"]["keys_out"],
                "rows": s["totals"]["rows_out"],
            },
        )
        for source, rows, keys in trace_edges.get(stage, []):
            logged = add_dataset(DatasetRole.TRACEABILITY, source, reported=reported[source])
            graph.add_edge(
                node,
                logged,
                data={
                    "relation": "traceability",
                    "keys": keys,
                    "rows": rows,
                    "reported": reported[source],
                },
            )
    for t in sources:  # a source that logged no row anywhere still belongs to the run
        add_dataset(DatasetRole.TRACEABILITY, t["name"], reported=reported[t["name"]])
    for stage in structure.order:
        parents = structure.parents[stage]
        for parent in parents:
            # What crossed the edge: the child's in when it has one parent; at a merge, the
            # parent's out (the child's in is the sum over its parents).
            figures = by_stage[stage if len(parents) == 1 else parent]["totals"]
            which = ("keys_in", "rows_in") if len(parents) == 1 else ("keys_out", "rows_out")
            graph.add_edge(
                dataset_id(stored[(DatasetRole.OUTPUT, parent)].uri),
                stage_id(run.pipeline, stage),
                data={"relation": "input", "keys": figures[which[0]], "rows": figures[which[1]]},
            )
    return graph


def journey_graph(conn: Connection, run_id: str, key_values: Sequence[object]) -> nx.DiGraph:
    """One client through a run: a node per stage it touched, edges along its path."""
    data = journey(conn, run_id, key_values)
    run = load_run(conn, run_id)
    structure, _ = stage_structure(conn, run)
    key = key_text(data["key"])
    graph = nx.DiGraph(
        name=f"{run.pipeline} run {run.run_id} key {key}",
        pipeline=run.pipeline,
        run_id=run.run_id,
        key=key,
        final_outcome=data["final_outcome"],
    )
    touched = {s["stage"] for s in data["stages"]}
    for s in data["stages"]:
        graph.add_node(
            record_id(run.pipeline, run.run_id, s["stage"], key),
            type=RECORD,
            data={
                "namespace": run.pipeline,
                "name": s["stage"],
                "run_id": run.run_id,
                "key": data["key"],
                "final_outcome": data["final_outcome"],
                **s,
            },
        )
    for s in data["stages"]:
        for parent in structure.parents[s["stage"]]:
            if parent in touched:
                graph.add_edge(
                    record_id(run.pipeline, run.run_id, parent, key),
                    record_id(run.pipeline, run.run_id, s["stage"], key),
                    data={"rows": s["rows_in"]},
                )
    return graph


# Exports -----------------------------------------------------------------------------------


def to_marquez(graph: nx.DiGraph) -> dict[str, Any]:
    """`{"graph": [{"id", "type", "data", "inEdges", "outEdges"}]}`, as Marquez answers
    `GET /api/v1/lineage`; tracer's edges also carry their figures in `data`."""

    def edge(u: str, v: str) -> dict[str, Any]:
        return {"origin": u, "destination": v, "data": graph.edges[u, v].get("data", {})}

    return {
        "graph": [
            {
                "id": node,
                "type": attrs["type"],
                "data": attrs["data"],
                "inEdges": [edge(u, node) for u in graph.predecessors(node)],
                "outEdges": [edge(node, v) for v in graph.successors(node)],
            }
            for node, attrs in graph.nodes(data=True)
        ]
    }


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """Nested figures as scalar attributes (`totals.keys_in`); lists as JSON text."""
    out: dict[str, str | int | float | bool] = {}
    for name, value in data.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{path}."))
        elif isinstance(value, list | tuple):
            out[path] = json.dumps(value, default=str)
        elif value is not None:
            out[path] = value if isinstance(value, str | int | float | bool) else str(value)
    return out


def _flat_graph(graph: nx.DiGraph) -> nx.DiGraph:
    flat = nx.DiGraph(**flatten(dict(graph.graph)))
    for node, attrs in graph.nodes(data=True):
        flat.add_node(node, type=attrs["type"], **flatten(attrs["data"]))
    for u, v, attrs in graph.edges(data=True):
        flat.add_edge(u, v, **flatten(attrs.get("data", {})))
    return flat


def to_graphml(graph: nx.DiGraph) -> str:
    """GraphML with every figure as a typed attribute (nested names joined by dots)."""
    return "\n".join(nx.generate_graphml(_flat_graph(graph))) + "\n"


def _quote(value: object) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


GRAPHVIZ_ATTRIBUTES = frozenset({"label", "shape", "color", "rankdir", "fontname", "fontsize"})


def _attrs(values: dict[str, Any]) -> str:
    """`label="...", "totals.keys_in"="3", ...`: Graphviz's own attributes bare, tracer's
    figures quoted (so a figure called `name` is not taken for the node's name by parsers)."""
    return ", ".join(
        f"{k if k in GRAPHVIZ_ATTRIBUTES else _quote(k)}={_quote(v)}" for k, v in values.items()
    )


def _label(node_type: str, data: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """What a person reads on the node, and how it is drawn."""
    if node_type == JOB:
        t = data["totals"]
        lines = [data["name"], f"keys in {t['keys_in']:,} · out {t['keys_out']:,}"]
        shown = {o: n for o, n in data["outcomes"].items() if n and o not in ("entered", "passed")}
        lines += [f"{o} {n:,}" for o, n in shown.items()]
        bad = any(o in ANOMALOUS for o in shown)
        return "\n".join(lines), {"shape": "box", "color": "red" if bad else "black"}
    if node_type == DATASET:
        rows = data.get("row_count")
        lines = [data["dataset"], data["uri"], f"{rows:,} rows" if rows is not None else ""]
        shape = "cylinder" if data["role"] == DatasetRole.OUTPUT else "note"
        return "\n".join(line for line in lines if line), {"shape": shape}
    lines = [data["name"], data["outcome"], f"rows {data['rows_in']} -> {data['rows_out']}"]
    lines += [f"{r['source']}: {r['reason']}" for r in data.get("reasons", [])]
    bad = data["outcome"] in ANOMALOUS
    return "\n".join(lines), {"shape": "box", "color": "red" if bad else "black"}


def to_dot(graph: nx.DiGraph) -> str:
    """Graphviz DOT, left to right, anomalous stages in red; every figure an attribute."""
    name = graph.graph.get("name", "tracer")
    lines = [
        f"digraph {_quote(name)} {{",
        f"  graph [{_attrs({'label': name, 'rankdir': 'LR', 'fontname': 'Helvetica'})}];",
        f"  node [{_attrs({'fontname': 'Helvetica', 'fontsize': '10'})}];",
        f"  edge [{_attrs({'fontname': 'Helvetica', 'fontsize': '9'})}];",
    ]
    for node, attrs in graph.nodes(data=True):
        label, style = _label(attrs["type"], attrs["data"])
        values = {"label": label, **style, "type": attrs["type"], **flatten(attrs["data"])}
        lines.append(f"  {_quote(node)} [{_attrs(values)}];")
    for u, v, attrs in graph.edges(data=True):
        data = attrs.get("data", {})
        rows = data.get("rows")
        values = {"label": f"{rows:,} row{'' if rows == 1 else 's'}"} if rows is not None else {}
        lines.append(f"  {_quote(u)} -> {_quote(v)} [{_attrs({**values, **flatten(data)})}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


FORMATS: dict[str, tuple[str, Callable[[nx.DiGraph], str]]] = {
    "graphml": ("application/graphml+xml", to_graphml),
    "dot": ("text/vnd.graphviz", to_dot),
}
"""Text exports by name, with their media type; `json` is `to_marquez`."""

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_name(graph: nx.DiGraph, fmt: str) -> str:
    """A download name for an export, e.g. `campaign-run-1.graphml`."""
    parts = [graph.graph.get("pipeline", "tracer"), graph.graph.get("run_id", "")]
    if "key" in graph.graph:
        parts.append(graph.graph["key"])
    stem = "-".join(_SAFE.sub("_", str(p)) for p in parts if p)
    return f"{stem}.{EXTENSIONS[fmt]}"


EXTENSIONS = {"json": "json", "graphml": "graphml", "dot": "gv"}
