"""A run's page: the flow diagram, the reconciliation in both views, stage flags, and the
status of each dataset while jobs run.

Everything comes from what classification stored (the reconciliation is a read of a few
rows), so the page costs the same for ten clients or a million.
"""

from __future__ import annotations

from typing import Any

from flask import render_template
from flask.typing import ResponseReturnValue

from api.state import connection
from api.web import words
from api.web.dag import run_graph
from api.web.flow import build_flow, extra_rows
from api.web.links import anomalies_url
from tracer.errors import TracerError
from tracer.model import RunStatus
from tracer.queries.catalog import list_runs, run_detail
from tracer.queries.reconciliation import reconciliation

RUNNING = frozenset({RunStatus.QUEUED.value, RunStatus.INGESTING.value})
COMPARABLE = 50


def _published(conn: Any, run_id: str, detail: dict[str, Any]) -> dict[str, Any] | None:
    """The run's reconciliation, or None while it has no classification yet."""
    if not detail.get("classified_at"):
        return None
    try:
        return reconciliation(conn, run_id)
    except TracerError:  # classified_at set, yet the query refuses: not ready after all
        return None


def run(run_id: str) -> ResponseReturnValue:
    with connection() as conn:
        detail = run_detail(conn, run_id)
        recon = _published(conn, run_id, detail)
        graph = run_graph(conn, run_id) if recon else None
        others = _comparable(conn, detail) if recon else []
    flow = build_flow(recon, graph) if recon and graph else None
    diagram = None
    if flow is not None:
        diagram = flow.to_json()
        for node in diagram["nodes"]:
            node["href"] = _node_href(run_id, node)
    return render_template(
        "run.html",
        run=detail,
        recon=recon,
        flow=flow,
        diagram=diagram,
        graph=graph,
        running=detail["status"] in RUNNING,
        breakers=_breakers(recon) if recon else [],
        others=others,
        extra_rows=extra_rows,
    )


def _comparable(conn: Any, run: dict[str, Any]) -> list[dict[str, Any]]:
    """Other classified runs of the same pipeline, newest first: what it can be compared with."""
    listed = list_runs(conn, pipeline=run["pipeline"], limit=COMPARABLE)["items"]
    return [r for r in listed if r["run_id"] != run["run_id"] and r.get("classified_at")]


def _breakers(recon: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(stage, outcome, keys) for every outcome that stops the run from reconciling."""
    return [
        (stage["stage"], outcome, int(stage["outcomes"].get(outcome, 0)))
        for stage in recon["stages"]
        for outcome in words.ANOMALY_OUTCOMES
        if outcome in words.BREAKERS and stage["outcomes"].get(outcome)
    ]


def _node_href(run_id: str, node: dict[str, Any]) -> str | None:
    """Where a click on a node goes: the keys behind it, or the stage's row in the table."""
    kind = node["kind"]
    if kind == "stage":
        return f"#stage-{node['stage']}"
    if kind == "extra_rows":
        return anomalies_url(run_id, "multiplied", node["stage"])
    if kind == "targeted":
        return "#reconciliation"
    return anomalies_url(run_id, kind, node["stage"])


def status(run_id: str) -> ResponseReturnValue:
    """The datasets' status alone: what the run page reloads by itself while jobs run."""
    with connection() as conn:
        detail = run_detail(conn, run_id)
    return render_template("_datasets.html", run=detail, running=detail["status"] in RUNNING)
