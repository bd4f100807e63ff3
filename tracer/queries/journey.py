"""Where did client X go: one key's journey through a run, and its history across runs."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, select, text, tuple_

from tracer.errors import NotFoundError, TracerError
from tracer.outcomes import JOURNEY_ANOMALIES, Final, Outcome, parse_stage_cells
from tracer.queries.common import RunInfo, load_run, parse_time, run_columns, run_info
from tracer.queries.explain import left_at, reason_item, summary
from tracer.queries.key_input import key_values as resolve_key
from tracer.queries.key_input import matches
from tracer.queries.pages import MAX_PAGE, check_limit, decode_token, page
from tracer.queries.patterns import run_patterns
from tracer.tables import pipelines, runs


def journey(
    conn: Connection,
    run_id: str,
    key_values: Sequence[object] | None = None,
    named: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """Outcome per stage in pipeline order, rows in/out, reasons, final outcome, anomalies met.

    The key is given by position (`key_values`) or by column name (`named`).
    """
    run, values, key, row = _run_and_key(conn, run_id, key_values, named)
    if row is None:
        shown = ", ".join(f"{c}={v}" for c, v in zip(run.key, values, strict=True))
        raise NotFoundError(f"client {shown} has no record in run {run_id!r}")
    reasons: dict[int, list[dict[str, Any]]] = {}  # stage index -> the reasons logged there
    for stage, source, reason, rows in row.key_reasons or ():
        reasons.setdefault(stage, []).append(reason_item(run, source, reason, rows))
    stages = []
    met = []
    cells = parse_stage_cells(run_patterns(conn, run)[row.key_pattern])
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
                "reasons": reasons.get(index, []),
            }
        )
        if cell.outcome in JOURNEY_ANOMALIES:
            met.append({"stage": name, "anomaly": cell.outcome.label})
        if cell.grain_violation:
            met.append({"stage": name, "anomaly": Outcome.GRAIN_VIOLATION.label})
    final = Final(row.key_final)
    return {
        "run": run.header(),
        "key": run.decode_key(key),
        "final_outcome": final.label,
        "summary": summary(run, final, stages),
        "entered": row.key_entered,
        "traced": row.key_traced,
        "stages": stages,
        # The final outcome itself is not an anomaly met on the way.
        "anomalies": [m for m in met if not _is_final(m, final.label, stages)],
    }


_RUN_AND_KEY = text(
    f"""
    SELECT {", ".join(f"r.{c.name}" for c in run_columns())}, p.name AS pipeline_name,
           k.final AS key_final, k.entered AS key_entered, k.traced AS key_traced,
           k.pattern AS key_pattern, reasons.key_reasons
    FROM runs AS r
    JOIN pipelines AS p ON p.id = r.pipeline_id
    LEFT JOIN key_outcomes AS k ON k.run_pk = :pk AND k.key = :key
    LEFT JOIN LATERAL (
        SELECT json_agg(json_build_array(kr.stage, d.name, kr.reason, kr.rows)
                        ORDER BY kr.stage, d.name, kr.reason) AS key_reasons
        FROM key_reasons AS kr JOIN datasets AS d ON d.id = kr.dataset_id
        WHERE kr.run_pk = :pk AND kr.key = :key AND k.traced
    ) AS reasons ON true
    WHERE r.run_id = :run_id
    """
)
_LAST_SEEN: dict[str, RunInfo] = {}
"""run id -> the run as last read: a guess at its pk and layout, checked by the statement
it serves (runs are immutable once classified, but can be deleted and posted again)."""
_LAST_SEEN_LOCK = threading.Lock()


def _run_and_key(
    conn: Connection,
    run_id: str,
    key_values: Sequence[object] | None,
    named: Mapping[str, object] | None,
) -> tuple[RunInfo, list[object], str, Any]:
    """(run, key values, stored key, the key's row or None): the run's row, the key's and
    its reasons (a traced key's: most keys have none) in one round trip. Encoding the key
    needs the run's key types, and reading it the run's partition: both come from the last
    answer for this run id, and the same statement reads them back; if they changed
    (another run under the id), it is read again."""
    guess = _LAST_SEEN.get(run_id)
    for _ in range(2):
        if guess is None:
            guess = _remember(load_run(conn, run_id))
        try:
            values = resolve_key(guess.key, key_values, named)
            key = guess.encode_key(values)
        except TracerError:
            fresh = load_run(conn, run_id)
            if _same(fresh, guess):
                raise  # the key is at fault, not a stale guess
            guess = _remember(fresh)
            continue
        found = conn.execute(_RUN_AND_KEY, {"run_id": run_id, "pk": guess.pk, "key": key})
        row = found.first()
        if row is None:
            _forget(run_id)
            raise NotFoundError(f"run {run_id!r} not found")
        run = run_info(row)
        if run.classified_at is None:
            raise TracerError(f"run {run_id!r} is {run.status}, not classified yet")
        if _same(run, guess):
            return run, values, key, row if row.key_final is not None else None
        guess = _remember(run)
    raise AssertionError("unreachable: the second read asks with what the first answered")


_KEY_IN_RUNS = text(
    """
    SELECT q.pk, k.final, k.pattern
    FROM unnest(CAST(:pks AS integer[]), CAST(:keys AS text[])) AS q(pk, key)
    JOIN key_outcomes AS k ON k.run_pk = q.pk AND k.key = q.key COLLATE "C"
    """
)


def _key_in_runs(conn: Connection, wanted: list[tuple[RunInfo, str]]) -> dict[int, Any]:
    """run pk -> (final, pattern) of the key in each run that holds it: one round trip for
    every run (each (run, key) pair probes that run's partition once)."""
    if not wanted:
        return {}
    params = {"pks": [run.pk for run, _ in wanted], "keys": [key for _, key in wanted]}
    return {pk: (final, pattern) for pk, final, pattern in conn.execute(_KEY_IN_RUNS, params)}


def _same(run: RunInfo, guess: RunInfo) -> bool:
    return (run.pk, run.layout) == (guess.pk, guess.layout)


def _remember(run: RunInfo) -> RunInfo:
    with _LAST_SEEN_LOCK:
        if len(_LAST_SEEN) >= 4096:  # runs come and go: forget the oldest
            del _LAST_SEEN[next(iter(_LAST_SEEN))]
        _LAST_SEEN[run.run_id] = run
    return run


def _forget(run_id: str) -> None:
    with _LAST_SEEN_LOCK:
        _LAST_SEEN.pop(run_id, None)


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
    candidates: list[tuple[RunInfo, str]] = []
    for row in conn.execute(query.order_by(runs.c.created_at.desc(), runs.c.pk.desc())):
        run = run_info(row)
        if named and not matches(run.key, named):
            continue
        try:
            candidates.append((run, run.encode_key(resolve_key(run.key, key_values, named))))
        except TracerError:  # another pipeline's key: other arity or type
            continue
    hits = _key_in_runs(conn, candidates)
    found: list[tuple[int, dict[str, Any]]] = []
    last = None
    for run, key in candidates:
        if run.pk not in hits:
            continue
        if len(found) == limit:  # one more run holds the key: the page ends here
            last_pk, last_item = found[-1]
            last = (last_item["run"]["created_at"], last_pk)
            break
        final, pattern = hits[run.pk]
        item = {
            "run": run.header(),
            "key": run.decode_key(key),
            "final_outcome": Final(final).label,
            "left_at": left_at(run, parse_stage_cells(run_patterns(conn, run)[pattern])),
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
