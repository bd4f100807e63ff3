"""A run's stage DAG, from the pipeline stored with the run.

The flow diagram follows parents, routed splits and merges; the reconciliation lists the
stages in pipeline order only, so the edges come from the run's own copy of its pipeline
(not the registry's latest definition, which a later run may have changed).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select

from tracer.errors import NotFoundError, TracerError
from tracer.graph import build_graph
from tracer.tables import runs


@dataclass(frozen=True)
class RunGraph:
    order: tuple[str, ...]  # pipeline order
    parents: dict[str, tuple[str, ...]]
    children: dict[str, tuple[str, ...]]
    routed: frozenset[str]  # stages whose rows each go to one child (`split: route`)

    def depth(self) -> dict[str, int]:
        """Longest path from a first stage: the diagram's column of each stage."""
        depth: dict[str, int] = {}
        for stage in self.order:  # topological: parents come first
            depth[stage] = max((depth[p] + 1 for p in self.parents[stage]), default=0)
        return depth


def run_graph(conn: Connection, run_id: str) -> RunGraph:
    """The DAG of `run_id`'s pipeline as it was when the run was registered."""
    stages = conn.execute(
        select(runs.c.manifest["pipeline"]["stages"]).where(runs.c.run_id == run_id)
    ).scalar()
    if stages is None:
        raise NotFoundError(f"run {run_id!r} not found")
    problems: list[str] = []
    graph = build_graph([(s["name"], s.get("parents")) for s in stages], problems.append)
    if graph is None:  # validated at submission; only a hand-edited database gets here
        raise TracerError(f"run {run_id!r} has an invalid stage graph: {'; '.join(problems)}")
    return RunGraph(
        order=graph.order,
        parents=graph.parents,
        children=graph.children,
        routed=frozenset(s["name"] for s in stages if s.get("split") == "route"),
    )
