"""Where did client X go: one key's journey through a run, and its history across runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, select, tuple_

from tracer.errors import NotFoundError, TracerError
from tracer.outcomes import JOURNEY_ANOMALIES, Final, Outcome, parse_stage_cells
from tracer.queries.common import load_run, parse_time, run_columns, run_info
from tracer.queries.explain import left_at, reasons_of, summary
from tracer.queries.key_input import key_values as resolve_key
from tracer.queries.key_input import matches
from tracer.queries.pages import MAX_PAGE, check_limit, decode_token, page
from tracer.tables import key_outcomes, pipelines, runs


def journey(
    conn: Connection,
    run_id: str,
    key_values: Sequence[object] | None = None,
    named: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """Outcome per stage in pipeline order, rows in/out, reasons, final outcome, anomalies met.

    The key is given by position (`key_values`) or by column name (`named`).
    """
    run = load_run(conn, run_id)
    values = resolve_key(run.key, key_values, named)
    key = run.encode_key(values)
    k = key_outcomes.c
    row = conn.execute(select(key_outcomes).where(k.run_pk == run.pk, k.key == key)).first()
    if row is None:
        shown = ", ".join(f"{c}={v}" for c, v in zip(run.key, values, strict=True))
        raise NotFoundError(f"client {shown} has no record in run {run_id!r}")
    # Only a traced key has reasons: most lookups skip this query.
    reasons = reasons_of(conn, run, [key]) if row.traced else {}
    stages = []
    met = []
    cells = parse_stage_cells(row.stages)
    for index, (name, cell) in enumerate(zip(run.stages, cells, strict=True)):
        if cell is None:
            continue
        stages.append(
            {
                "stage": name,
                "outcome": cell.outcome.label,
                "rows_in": cell.rows_in,
                "rows_out": cell.rows_out,
                "rows_dropped_reported": cell.drop_rep,
                "rows_dropped_operational": cell.drop_ops,
                "grain_violation": cell.grain_violation,
                "reasons": reasons.get((key, index), []),
            }
        )
        if cell.outcome in JOURNEY_ANOMALIES:
            met.append({"stage": name, "anomaly": cell.outcome.label})
        if cell.grain_violation:
            met.append({"stage": name, "anomaly": Outcome.GRAIN_VIOLATION.label})
    final = Final(row.final)
    return {
        "run": run.header(),
        "key": run.decode_key(key),
        "final_outcome": final.label,
        "summary": summary(run, final, stages),
        "entered": row.entered,
        "traced": row.traced,
        "stages": stages,
        # The final outcome itself is not an anomaly met on the way.
        "anomalies": [m for m in met if not _is_final(m, final.label, stages)],
    }


def _is_final(met: dict[str, str], final: str, stages: list[dict[str, Any]]) -> bool:
    """The stage whose outcome became the final outcome (the last one the key left at)."""
    leaving = [s for s in stages if s["rows_in"] >= 1 and s["rows_out"] == 0]
    return bool(leaving) and met["anomaly"] == final and met["stage"] == leaving[-1]["stage"]


def history(
    conn: Connection,
    key_values: Sequence[object] | None = None,
    pipeline: str | None = None,
    limit: int = 50,
    after: str | None = None,
    named: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """Every classified run the key appears in, newest first, with its final outcome there
    and the stage where it left (null when it did not leave).

    The key is read in each run's own key types, so one lookup spans pipelines
    whose keys agree in arity (a run whose key cannot hold the values is skipped);
    given by column name, it spans the runs whose key has exactly those columns.
    """
    if bool(key_values) == bool(named):
        raise TracerError("give the key by position (key=...) or by column name, one of the two")
    limit = check_limit(limit, MAX_PAGE)
    written = [str(v) for v in key_values] if key_values else sorted(
        (c, str(v)) for c, v in (named or {}).items()
    )  # fmt: skip
    scope = ("history", written, pipeline)
    query = (
        select(*run_columns(), pipelines.c.name.label("pipeline_name"))
        .join(pipelines, pipelines.c.id == runs.c.pipeline_id)
        .where(runs.c.classified_at.is_not(None))  # a published classification
    )
    if pipeline is not None:
        query = query.where(pipelines.c.name == pipeline)
    if after:
        created, pk = decode_token(after, scope, (str, int))
        query = query.where(tuple_(runs.c.created_at, runs.c.pk) < tuple_(parse_time(created), pk))
    found: list[tuple[int, dict[str, Any]]] = []
    last = None
    k = key_outcomes.c
    for row in conn.execute(query.order_by(runs.c.created_at.desc(), runs.c.pk.desc())):
        run = run_info(row)
        if named and not matches(run.key, named):
            continue
        try:
            key = run.encode_key(resolve_key(run.key, key_values, named))
        except TracerError:  # another pipeline's key: other arity or type
            continue
        hit = conn.execute(
            select(k.final, k.stages).where(k.run_pk == run.pk, k.key == key)
        ).first()
        if hit is None:
            continue
        if len(found) == limit:  # one more run holds the key: the page ends here
            last_pk, last_item = found[-1]
            last = (last_item["run"]["created_at"], last_pk)
            break
        item = {
            "run": run.header(),
            "key": run.decode_key(key),
            "final_outcome": Final(hit.final).label,
            "left_at": left_at(run, parse_stage_cells(hit.stages)),
        }
        found.append((run.pk, item))
    if not found and not after:
        shown = (
            ", ".join(str(v) for v in key_values)
            if key_values
            else ", ".join(f"{c}={v}" for c, v in (named or {}).items())
        )
        raise NotFoundError(f"client {shown} appears in no classified run")
    return page([item for _, item in found], last, scope)
