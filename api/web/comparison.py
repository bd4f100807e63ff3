"""Two runs of one pipeline side by side (docs/semantics.md#comparing-runs): the matrix of
final outcomes, where changed clients first differ, the change per stage and outcome, and
the clients behind every cell; all from tracer.queries.compare, as the API answers it."""

from __future__ import annotations

from typing import Any

from flask import abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from api.state import connection
from tracer.queries.catalog import run_detail
from tracer.queries.compare import ABSENT, OUTCOMES, compare_keys
from tracer.queries.compare import compare as compare_runs

PAGE = 100


def compare_form() -> ResponseReturnValue:
    """The run page's "compare with" form: `?a=RUN&b=RUN`."""
    run_a, run_b = request.args.get("a"), request.args.get("b")
    if not run_a or not run_b:
        abort(400, "choose two runs: ?a=RUN&b=RUN")
    return redirect(url_for("web.compare", run_a=run_a, run_b=run_b))


def _header(detail: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in detail.items() if k != "datasets"}


def compare(run_a: str, run_b: str) -> ResponseReturnValue:
    with connection() as conn:
        result = compare_runs(conn, run_a, run_b)
        a, b = _header(run_detail(conn, run_a)), _header(run_detail(conn, run_b))
    cells = {(m["a"], m["b"]): m["keys"] for m in result["matrix"]}
    shown = [o for o in OUTCOMES if any(o in pair for pair in cells)]
    changed_stages = [
        {
            "stage": s["stage"],
            "outcomes": {o: c for o, c in s["outcomes"].items() if c["delta"]},
        }
        for s in result["stages"]
    ]
    return render_template(
        "compare.html",
        a=a,
        b=b,
        result=result,
        cells=cells,
        outcomes=shown,
        absent=ABSENT,
        changed_stages=[s for s in changed_stages if s["outcomes"]],
    )


def compare_cell(run_a: str, run_b: str) -> ResponseReturnValue:
    """The clients of one matrix cell: final outcome `a` in run A and `b` in run B."""
    final_a, final_b = request.args.get("a", ""), request.args.get("b", "")
    after = request.args.get("next") or None
    with connection() as conn:
        page = compare_keys(conn, run_a, run_b, final_a, final_b, PAGE, after)
    here = {"run_a": run_a, "run_b": run_b, "a": final_a, "b": final_b}
    return render_template(
        "compare_keys.html",
        page=page,
        absent=ABSENT,
        next_url=url_for("web.compare_cell", **here, next=page["next"]) if page["next"] else None,
        first_url=url_for("web.compare_cell", **here) if after else None,
    )
