"""Lists of keys: a run's anomalies by outcome and stage, and the keys behind a gap cell.

Keyset pages from the same queries as the API; every key links to its journey.
"""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from api import lineage
from api.state import connection
from api.web import words
from tracer.queries.anomalies import anomalies as anomaly_page
from tracer.queries.anomalies import gap_keys as gap_key_page
from tracer.queries.reconciliation import reconciliation

PAGE = 100
KNOWN_ANOMALY_FIELDS = ("stage", "key", "rows_in", "rows_out", "rows_dropped", "extra_rows")


def _counts(recon: dict[str, Any]) -> dict[str, dict[str, int]]:
    """outcome -> stage -> keys, from the reconciliation (grain violations from the flags)."""
    counts: dict[str, dict[str, int]] = {}
    for stage in recon["stages"]:
        for outcome in words.ANOMALY_OUTCOMES:
            if outcome == "grain_violation":
                n = stage["flags"].get("grain_violation", 0)
            else:
                n = stage["outcomes"].get(outcome, 0)
            counts.setdefault(outcome, {})[stage["stage"]] = int(n)
    return counts


def _extra_fields(items: list[dict[str, Any]], known: tuple[str, ...]) -> list[str]:
    """Fields the query's items carry beyond those the page knows (added since), in order."""
    extra: list[str] = []
    for item in items:
        extra += [f for f in item if f not in known and f not in extra]
    return extra


def anomalies(run_id: str) -> ResponseReturnValue:
    """Counts per outcome and stage; with an outcome chosen, its keys page by page."""
    outcome = request.args.get("outcome") or None
    stage = request.args.get("stage") or None
    after = request.args.get("next") or None
    with connection() as conn:
        recon = reconciliation(conn, run_id)
        page = anomaly_page(conn, run_id, outcome, stage, PAGE, after) if outcome else None
    counts = _counts(recon)
    stages = [s["stage"] for s in recon["stages"]]
    total = None
    if page is not None:
        total = page.get("total")
    if total is None and outcome in counts:  # from the reconciliation, if the page has none
        total = counts[outcome][stage] if stage in stages else sum(counts[outcome].values())
    next_url = None
    if page and page["next"]:
        next_url = url_for(
            "web.anomalies", run_id=run_id, outcome=outcome, stage=stage, next=page["next"]
        )
    items = page["items"] if page else []
    return render_template(
        "anomalies.html",
        run=recon["run"],
        stages=stages,
        counts=counts,
        outcome=outcome,
        stage=stage,
        total=total,
        items=items,
        extra_fields=_extra_fields(items, KNOWN_ANOMALY_FIELDS),
        next_url=next_url,
        first_url=url_for("web.anomalies", run_id=run_id, outcome=outcome, stage=stage)
        if after
        else None,
        csv_url=url_for(
            "web.anomalies_csv", run_id=run_id, outcome=outcome, stage=stage, format="csv"
        )
        if outcome
        else None,
    )


def _as_csv(endpoint: str, **view_args: str) -> ResponseReturnValue | None:
    """The API views read `format` from the query: make sure a download asks for CSV."""
    if request.args.get("format") == "csv":
        return None
    args = request.args.to_dict(flat=False)
    args["format"] = ["csv"]
    return redirect(url_for(endpoint, **view_args, **args))


def anomalies_csv(run_id: str) -> ResponseReturnValue:
    """The API's CSV of the whole list (one implementation, api.lineage), reached with the
    pages' cookie: a download link cannot send a bearer header."""
    return _as_csv("web.anomalies_csv", run_id=run_id) or lineage.get_anomalies(run_id=run_id)


def gap_keys_csv(run_id: str, cell: str) -> ResponseReturnValue:
    """The API's CSV of a gap cell's keys, as for anomalies."""
    return _as_csv("web.gap_keys_csv", run_id=run_id, cell=cell) or lineage.get_gap_keys(
        run_id=run_id, cell=cell
    )


def gap_keys(run_id: str, cell: str) -> ResponseReturnValue:
    """The keys behind one cell of the gap (reporting view with `reporting=1`), or behind one
    of its causes (`stage` and `outcome`: where the keys left, or first went wrong)."""
    reporting = request.args.get("reporting") in ("1", "true", "yes")
    stage = request.args.get("stage") or None
    outcome = request.args.get("outcome") or None
    after = request.args.get("next") or None
    cause = {"stage": stage, "outcome": outcome} if stage or outcome else {}
    with connection() as conn:
        recon = reconciliation(conn, run_id)
        page = gap_key_page(conn, run_id, cell, reporting, PAGE, after, **cause)
    cells = recon["reporting_gap_cells" if reporting else "gap_cells"]
    summary = next((c for c in cells if c["cell"] == cell), None)
    here = {"run_id": run_id, "cell": cell, "reporting": 1 if reporting else None, **cause}
    return render_template(
        "gap_keys.html",
        run=recon["run"],
        cell=cell,
        reporting=reporting,
        cause=cause,
        summary=summary,
        total=page.get("total", summary["keys"] if summary and not cause else None),
        items=page["items"],
        extra_fields=_extra_fields(page["items"], ("key",)),
        next_url=url_for("web.gap_keys", **here, next=page["next"]) if page["next"] else None,
        first_url=url_for("web.gap_keys", **here) if after else None,
        csv_url=url_for("web.gap_keys_csv", **here, format="csv"),
    )
