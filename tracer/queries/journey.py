"""Where did client X go: one key's journey through a run, and its history across runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select, tuple_

from tracer.errors import NotFoundError, TracerError
from tracer.model import RunStatus
from tracer.outcomes import JOURNEY_ANOMALIES, Final, Outcome, parse_stage_cells
from tracer.queries.common import load_run, parse_time, run_columns, run_info
from tracer.queries.pages import MAX_PAGE, check_limit, decode_token, page
from tracer.tables import datasets, key_outcomes, key_reasons, pipelines, runs


def journey(conn: Connection, run_id: str, key_values: Sequence[object]) -> dict[str, Any]:
    """Outcome per stage in pipeline order, rows in/out, reasons, final outcome, anomalies met."""
    run = load_run(conn, run_id)
    key = run.encode_key(key_values)
    k = key_outcomes.c
    row = conn.execute(select(key_outcomes).where(k.run_pk == run.pk, k.key == key)).first()
    if row is None:
        raise NotFoundError(
            f"client {dict(zip(run.key, key_values, strict=True))} has no record in run {run_id!r}"
        )
    reasons: dict[int, list[dict[str, Any]]] = {}
    r = key_reasons.c
    # Only a traced key has reasons: most lookups skip this query.
    for reason in (
        []
        if not row.traced
        else conn.execute(
            select(r.stage, r.reason, r.rows, datasets.c.name, datasets.c.role, datasets.c.id)
            .join(datasets, datasets.c.id == r.dataset_id)
            .where(r.run_pk == run.pk, r.key == key)
            .order_by(r.stage, datasets.c.name, r.reason)
        )
    ):
        reasons.setdefault(reason.stage, []).append(
            {
                "source": reason.name,
                "reason": reason.reason,
                "rows": reason.rows,
                "reported": run.layout.reported[reason.name],
            }
        )
    stages = []
    met = []
    for name, cell in zip(run.stages, parse_stage_cells(row.stages), strict=True):
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
                "reasons": reasons.get(run.stages.index(name), []),
            }
        )
        if cell.outcome in JOURNEY_ANOMALIES:
            met.append({"stage": name, "anomaly": cell.outcome.label})
        if cell.grain_violation:
            met.append({"stage": name, "anomaly": Outcome.GRAIN_VIOLATION.label})
    final = Final(row.final).label
    return {
        "run": run.header(),
        "key": run.decode_key(key),
        "final_outcome": final,
        "entered": row.entered,
        "traced": row.traced,
        "stages": stages,
        # The final outcome itself is not an anomaly met on the way.
        "anomalies": [m for m in met if not _is_final(m, final, stages)],
    }


def _is_final(met: dict[str, str], final: str, stages: list[dict[str, Any]]) -> bool:
    """The stage whose outcome became the final outcome (the last one the key left at)."""
    leaving = [s for s in stages if s["rows_in"] >= 1 and s["rows_out"] == 0]
    return bool(leaving) and met["anomaly"] == final and met["stage"] == leaving[-1]["stage"]


def history(
    conn: Connection,
    key_values: Sequence[object],
    pipeline: str | None = None,
    limit: int = 50,
    after: str | None = None,
) -> dict[str, Any]:
    """Every classified run the key appears in, newest first, with its final outcome there.

    The key is read in each run's own key types, so one lookup spans pipelines
    whose keys agree in arity (a run whose key cannot hold the values is skipped).
    """
    limit = check_limit(limit, MAX_PAGE)
    scope = ("history", [str(v) for v in key_values], pipeline)
    query = (
        select(*run_columns(), pipelines.c.name.label("pipeline_name"))
        .join(pipelines, pipelines.c.id == runs.c.pipeline_id)
        .where(runs.c.status == RunStatus.CLASSIFIED)
    )
    if pipeline is not None:
        query = query.where(pipelines.c.name == pipeline)
    if after:
        created, pk = decode_token(after, scope, (str, int))
        query = query.where(tuple_(runs.c.created_at, runs.c.pk) < tuple_(parse_time(created), pk))
    found: list[tuple[int, dict[str, Any]]] = []
    last = None
    for row in conn.execute(query.order_by(runs.c.created_at.desc(), runs.c.pk.desc())):
        run = run_info(row)
        try:
            key = run.encode_key(key_values)
        except TracerError:  # another pipeline's key: other arity or type
            continue
        hit = conn.execute(
            select(key_outcomes.c.final).where(
                key_outcomes.c.run_pk == run.pk, key_outcomes.c.key == key
            )
        ).scalar()
        if hit is None:
            continue
        if len(found) == limit:  # one more run holds the key: the page ends here
            last_pk, last_item = found[-1]
            last = (last_item["run"]["created_at"], last_pk)
            break
        item = {"run": run.header(), "key": run.decode_key(key), "final_outcome": Final(hit).label}
        found.append((run.pk, item))
    if not found and not after:
        raise NotFoundError(f"client {list(key_values)} appears in no classified run")
    return page([item for _, item in found], last, scope)
