"""The stage DAG: pipeline order, parents and children, checked for cycles with networkx."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import networkx as nx


@dataclass(frozen=True)
class StageGraph:
    order: tuple[str, ...]
    index: dict[str, int]
    parents: dict[str, tuple[str, ...]]
    children: dict[str, tuple[str, ...]]

    @property
    def roots(self) -> tuple[str, ...]:
        """Stages without parents: their rows enter the run."""
        return tuple(s for s in self.order if not self.parents[s])

    @property
    def finals(self) -> tuple[str, ...]:
        """Stages without children: a row there is a target."""
        return tuple(s for s in self.order if not self.children[s])


def build_graph(
    stages: Sequence[tuple[str, Sequence[str] | None]],
    fail: Callable[[str], None],
    field: str = "stages",
) -> StageGraph | None:
    """Parents default to the previous stage; the order is topological, ties in manifest order.

    Problems go to `fail`; None is returned when the graph cannot be built.
    """
    position: dict[str, int] = {}
    ok = True
    for i, (name, _) in enumerate(stages):
        if name in position:
            fail(f"{field}[{i}].name: duplicate stage {name!r}")
            ok = False
        position.setdefault(name, i)
    graph = nx.DiGraph()
    graph.add_nodes_from(position)
    for i, (name, parents) in enumerate(stages):
        declared = [stages[i - 1][0]] if parents is None and i > 0 else list(parents or [])
        for parent in declared:
            if parent not in position:
                fail(f"{field}[{name}].parents: {parent!r} names no stage")
                ok = False
            elif parent == name:
                fail(f"{field}[{name}].parents: a stage cannot be its own parent")
                ok = False
            else:
                graph.add_edge(parent, name)
    if not ok:
        return None
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
        fail(f"{field}: the stage graph has a cycle: {path}")
        return None
    order = tuple(nx.lexicographical_topological_sort(graph, key=position.__getitem__))
    parents = {s: tuple(sorted(graph.predecessors(s), key=position.__getitem__)) for s in order}
    children = {s: tuple(sorted(graph.successors(s), key=position.__getitem__)) for s in order}
    return StageGraph(order, {s: i for i, s in enumerate(order)}, parents, children)
