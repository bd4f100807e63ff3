"""The runs page (every run, its figures and whether it reconciles) and the search box."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from flask import redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from api.state import connection
from tracer.errors import NotFoundError, TracerError
from tracer.model import RunStatus
from tracer.pipelines import list_pipelines
from tracer.queries.catalog import list_runs
from tracer.queries.common import load_run
from tracer.queries.journey import history
from tracer.queries.pages import MAX_PAGE

PAGE = 100
STATUSES = tuple(s.value for s in RunStatus)
ORDERS = {"newest": ("newest", "newest first"), "broken": ("distance", "broken first")}
"""The page's orders: list_runs' sort and its words (broken first: furthest from reconciling)."""
RECONCILES = {"yes": True, "no": False}


def _choice(name: str, allowed: Iterable[str]) -> str | None:
    value = request.args.get(name) or None
    return value if value in allowed else None


def runs() -> ResponseReturnValue:
    """Every run with its headline figures, newest first or broken first (furthest from
    reconciling: the survey's `distance` order), filtered by pipeline, status, reconciling."""
    chosen = {
        "pipeline": request.args.get("pipeline") or None,
        "status": _choice("status", STATUSES),
        "reconciles": _choice("reconciles", RECONCILES),
        "order": _choice("order", ORDERS) or "newest",
    }
    after = request.args.get("next") or None
    with connection() as conn:
        page = list_runs(
            conn,
            pipeline=chosen["pipeline"],
            status=chosen["status"],
            reconciles=RECONCILES[chosen["reconciles"]] if chosen["reconciles"] else None,
            sort=ORDERS[chosen["order"]][0],
            limit=PAGE,
            after=after,
        )
        pipelines = [p["name"] for p in list_pipelines(conn, limit=MAX_PAGE)["items"]]
    next_url = url_for("web.runs", **chosen, next=page["next"]) if page["next"] else None
    return render_template(
        "runs.html",
        runs=page["items"],
        pipelines=pipelines,
        statuses=STATUSES,
        orders={value: words for value, (_, words) in ORDERS.items()},
        chosen=chosen,
        next_url=next_url,
        first_url=url_for("web.runs", **chosen) if after else None,
    )


def _key_candidates(text: str) -> list[list[str]]:
    """The typed key as one value, and split on commas (or spaces) for a composite key."""
    candidates = [[text]]
    for separator in (r"\s*,\s*", r"\s+"):
        parts = [p for p in re.split(separator, text) if p]
        if len(parts) > 1 and parts not in candidates:
            candidates.append(parts)
    return candidates


def search() -> ResponseReturnValue:
    """A run id goes straight to its run; anything else is looked up as a client key (its
    history across runs) and in the run ids and labels."""
    query = (request.args.get("q") or "").strip()
    if not query:
        return render_template("search.html", query="", runs=[], clients=[])
    with connection() as conn:
        try:
            load_run(conn, query, classified=False)
            return redirect(url_for("web.run", run_id=query))
        except NotFoundError:
            pass
        listed = list_runs(conn, limit=MAX_PAGE)["items"]
        clients: list[dict[str, Any]] = []
        for values in _key_candidates(query):
            try:
                clients = history(conn, values, limit=MAX_PAGE)["items"]
            except TracerError:  # not found, or not a key of any pipeline
                continue
            break
    folded = query.casefold()
    matching = [
        run
        for run in listed
        if folded in run["run_id"].casefold() or folded in (run.get("label") or "").casefold()
    ]
    return render_template("search.html", query=query, runs=matching, clients=clients)
