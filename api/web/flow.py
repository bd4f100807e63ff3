"""The complete flow of a run, as nodes and links for the run page's Sankey diagram.

Built from the precomputed reconciliation (per-stage key counts) and the run's stage DAG,
never from per-key data, so a run of a million clients draws as fast as one of ten.
Widths are distinct clients, except the extra rows that multiplication creates, which are
rows (a multiplied client is still one client; its extra rows are what inflates the
counts downstream). The page prints every figure of this model in a table too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from api.web.dag import RunGraph

LEAVING: tuple[tuple[str, str], ...] = (
    ("dropped", "dropped (reported)"),
    ("dropped_unreported", "dropped (operational only)"),
    ("orphaned", "orphaned"),
)
"""Ways a client leaves at a stage, as the diagram names them, in the order drawn."""


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # stage, targeted, dropped, dropped_unreported, orphaned, appeared, extra_rows
    stage: str | None
    label: str
    figure: int  # the number printed on the node
    detail: str  # a second line of figures ("in 100 → out 95"), or ""
    column: int
    order: int  # position within its column, top to bottom


@dataclass(frozen=True)
class Link:
    source: str
    target: str
    value: int
    unit: str  # clients or rows
    kind: str  # continue, leave, target, appear, extra_rows
    exact: bool  # False only for an edge between a routed split and a merge (an upper bound)


@dataclass(frozen=True)
class Flow:
    nodes: list[Node]
    links: list[Link]

    def to_json(self) -> dict[str, Any]:
        return {"nodes": [asdict(n) for n in self.nodes], "links": [asdict(x) for x in self.links]}

    def label(self, node_id: str) -> str:
        return next(n.label for n in self.nodes if n.id == node_id)


def stage_id(stage: str) -> str:
    return f"stage:{stage}"


def extra_rows(stage: dict[str, Any]) -> int:
    """Rows multiplication added at the stage: out - in over its multiplied keys."""
    rows = stage["rows"]["multiplied"]
    return max(rows["rows_out"] - rows["rows_in"], 0)


def build_flow(reconciliation: dict[str, Any], graph: RunGraph) -> Flow:
    """Clients entering, continuing along the DAG, leaving by kind at each stage, targeted."""
    by_name = {s["stage"]: s for s in reconciliation["stages"]}
    depth = graph.depth()
    last = max(depth.values(), default=0)
    nodes: list[Node] = []
    links: list[Link] = []

    def keys_in(stage: str) -> int:
        return int(by_name[stage]["totals"]["keys_in"])

    def keys_out(stage: str) -> int:
        return int(by_name[stage]["totals"]["keys_out"])

    for index, name in enumerate(graph.order):
        stage = by_name[name]
        outcomes = stage["outcomes"]
        first = not graph.parents[name]
        detail = (
            f"entered {outcomes['entered']:,}"
            if first
            else f"in {keys_in(name):,} → out {keys_out(name):,}"  # flow.js splits at the arrow
        )
        column = depth[name]
        nodes.append(Node(stage_id(name), "stage", name, name, keys_out(name), detail, column, 0))
        for parent in graph.parents[name]:
            value, exact = _edge(graph, parent, name, keys_out(parent), keys_in(name))
            if value:
                links.append(
                    Link(stage_id(parent), stage_id(name), value, "clients", "continue", exact)
                )
        # Leaving nodes sit in the next column, under the stages there.
        for rank, (kind, words) in enumerate(LEAVING, start=1):
            count = int(outcomes[kind])
            if count:
                node = f"{kind}:{name}"
                nodes.append(
                    Node(node, kind, name, words, count, "", column + 1, 100 * index + rank)
                )
                links.append(Link(stage_id(name), node, count, "clients", "leave", True))
        # What comes in from nowhere sits in the previous column.
        appeared = int(outcomes["appeared"])
        if appeared and column:
            node = f"appeared:{name}"
            nodes.append(
                Node(node, "appeared", name, "appeared", appeared, "", column - 1, 100 * index + 5)
            )
            links.append(Link(node, stage_id(name), appeared, "clients", "appear", True))
        extra = extra_rows(stage)
        if extra and column:
            node = f"extra_rows:{name}"
            detail = f"{outcomes['multiplied']:,} clients multiplied"
            nodes.append(
                Node(node, "extra_rows", name, "extra rows", extra, detail, column - 1,
                     100 * index + 6)
            )  # fmt: skip
            links.append(Link(node, stage_id(name), extra, "rows", "extra_rows", True))

    targeted = int(reconciliation["totals"]["targeted"])
    nodes.append(Node("targeted", "targeted", None, "targeted", targeted, "", last + 1, 0))
    for name in graph.order:
        if not graph.children[name] and keys_out(name):
            links.append(
                Link(stage_id(name), "targeted", keys_out(name), "clients", "target", True)
            )
    return Flow(nodes, links)


def _edge(graph: RunGraph, parent: str, child: str, out: int, into: int) -> tuple[int, bool]:
    """Clients passed along parent -> child, from the counts the reconciliation keeps.

    A child with one parent receives exactly its `keys_in`; a parent with one child hands
    on exactly its `keys_out`. Only a merge fed by a stage with several children (no
    per-edge count is stored) falls back to an upper bound.
    """
    if len(graph.parents[child]) == 1:
        return into, True
    if len(graph.children[parent]) == 1:
        return out, True
    return min(out, into), False
