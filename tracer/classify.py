"""Classification of a run: the outcome table of lineage-semantics.md, set-based in Postgres.

One grouped pass over the run's `dataset_keys` pivots every key's rows into
per-stage columns (out, distinct grains, reported and operational drops) with
FILTER; `in(k)` of each stage is then an expression over its parents' columns
(routed splits included), and the outcome a CASE in the table's first-match
order. The result is one `key_outcomes` row per key with per-stage arrays; the
anomaly list, the reasons, the stage summaries and the run totals derive from
it. Measured on this machine type, this single pass beat joining adjacent
stages 2.4x at 1M clients, with the gap widening at 5M.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, text, update

from tracer.ingest import KIND_OPERATIONAL, KIND_OUTPUT, KIND_REPORTED
from tracer.manifest import Pipeline, Stage
from tracer.outcomes import STAGE_OUTCOMES, UNREMARKABLE, Final, Outcome
from tracer.partitions import replace_run_partitions
from tracer.reconcile import flags_by_stage, run_totals
from tracer.tables import datasets, runs, stage_summaries

O = Outcome  # noqa: E741 - short alias keeps the generated SQL readable


def classify_run(conn: Connection, run_pk: int, pipeline: Pipeline) -> None:
    """Recompute every outcome of the run from its ingested datasets, atomically."""
    rows = conn.execute(
        select(datasets.c.id, datasets.c.role, datasets.c.name).where(datasets.c.run_pk == run_pk)
    ).all()
    dataset_ids = [r.id for r in rows]
    trace_ids = [r.id for r in rows if r.role == "traceability"]
    conn.execute(text("SET LOCAL work_mem = '256MB'"))
    parts = replace_run_partitions(conn, run_pk)
    conn.execute(text(_key_outcomes_sql(pipeline, run_pk, dataset_ids, parts["key_outcomes"])))
    conn.execute(text(_anomalies_sql(run_pk, parts["key_outcomes"], parts["anomalies"])))
    if trace_ids:
        conn.execute(text(_reasons_sql(run_pk, trace_ids, parts["key_reasons"])))
    summaries = _stage_summaries(conn, run_pk, pipeline, parts["key_outcomes"])
    conn.execute(delete(stage_summaries).where(stage_summaries.c.run_pk == run_pk))
    conn.execute(insert(stage_summaries), summaries)
    totals, cells = run_totals(conn, run_pk, parts["key_outcomes"], summaries)
    conn.execute(
        update(runs)
        .where(runs.c.pk == run_pk)
        .values(
            status="classified",
            error=None,
            totals=totals,
            gap_cells=cells,
            classified_at=func.now(),
        )
    )


def _ids(values: Sequence[int]) -> str:
    return ", ".join(str(int(v)) for v in values) or "NULL"


def _key_outcomes_sql(
    pipeline: Pipeline, run_pk: int, dataset_ids: Sequence[int], target: str
) -> str:
    stages = pipeline.stages
    pivot = []
    for s in stages:
        i = s.index
        for col, kind, value in (
            ("o", KIND_OUTPUT, "rows"),
            ("g", KIND_OUTPUT, "grains"),
            ("r", KIND_REPORTED, "rows"),
            ("p", KIND_OPERATIONAL, "rows"),
        ):
            where = f"kind = {kind} AND stage = {i}"
            pivot.append(f"coalesce(sum({value}) FILTER (WHERE {where}), 0)::int AS {col}{i}")
    ins = ", ".join(f"{_in_expr(pipeline, s)} AS i{s.index}" for s in stages)
    outcomes = ", ".join(f"{_outcome_expr(s)} AS c{s.index}" for s in stages)
    arr = lambda prefix, cast: f"ARRAY[{', '.join(f'{prefix}{s.index}' for s in stages)}]::{cast}"  # noqa: E731
    finals = " OR ".join(f"o{pipeline.stage(name).index} > 0" for name in pipeline.graph.finals)
    roots = " OR ".join(f"o{pipeline.stage(name).index} > 0" for name in pipeline.graph.roots)
    left = " ".join(
        f"WHEN i{s.index} >= 1 AND o{s.index} = 0 THEN {_final_of(f'c{s.index}')}"
        for s in reversed(stages)
    )
    traced = " + ".join(f"r{s.index} + p{s.index}" for s in stages)
    reported = " + ".join(f"r{s.index}" for s in stages)
    grain = ", ".join(f"CASE WHEN o{s.index} > g{s.index} THEN {s.index} END" for s in stages)
    return f"""
INSERT INTO {target} (run_pk, key, final, entered, targeted, traced, traced_reported,
                      outcomes, rows_in, rows_out, drop_rep, drop_ops, grain_violations)
SELECT {int(run_pk)}, key,
       CASE WHEN {finals} THEN {Final.TARGETED.value} {left} ELSE {Final.NEVER_ENTERED.value} END,
       {roots}, {finals}, ({traced}) > 0, ({reported}) > 0,
       {arr("c", "smallint[]")}, {arr("i", "int[]")}, {arr("o", "int[]")},
       {arr("r", "int[]")}, {arr("p", "int[]")},
       array_remove(ARRAY[{grain}], NULL)::smallint[]
FROM (
    SELECT key, {", ".join(pivot)}
    FROM dataset_keys WHERE dataset_id IN ({_ids(dataset_ids)})
    GROUP BY key
) k
CROSS JOIN LATERAL (SELECT {ins}) i
CROSS JOIN LATERAL (SELECT {outcomes}) c
"""


def _present(stage: Stage) -> str:
    i = stage.index
    return f"(o{i} + r{i} + p{i} > 0)"


def _in_expr(pipeline: Pipeline, stage: Stage) -> str:
    """in(k) at `stage`: parents' rows summed; a routed parent's only where k was routed here."""
    if not stage.parents:
        return "0"
    terms = []
    for name in stage.parents:
        parent = pipeline.stage(name)
        rows = f"o{parent.index}"
        if parent.split_route:
            siblings = " OR ".join(_present(pipeline.stage(c)) for c in parent.children)
            rows = f"CASE WHEN {_present(stage)} OR NOT ({siblings}) THEN {rows} ELSE 0 END"
        terms.append(rows)
    return " + ".join(terms)


def _outcome_expr(stage: Stage) -> str:
    """The outcome table, first matching row wins (lineage-semantics.md, Per stage, per key)."""
    n = stage.index
    i, o, r, p = f"i{n}", f"o{n}", f"r{n}", f"p{n}"
    d = f"({r} + {p})"
    if not stage.parents:
        # At the first stage every key with out >= 1 is `entered`; a drop alone is a phantom.
        return (
            f"CASE WHEN {o} >= 1 THEN {O.ENTERED.value} "
            f"WHEN {d} >= 1 THEN {O.PHANTOM_DROP.value} ELSE 0 END"
        )
    expanded = (
        f"WHEN {i} >= 1 AND {o} > {i} AND {d} = 0 AND g{n} = {o} THEN {O.EXPANDED.value} "
        if stage.fanout_expected
        else ""
    )
    return (
        f"CASE WHEN {i} >= 1 AND {o} = {i} AND {d} = 0 THEN {O.PASSED.value} "
        f"{expanded}"
        f"WHEN {i} >= 1 AND {o} > {i} THEN {O.MULTIPLIED.value} "
        f"WHEN {i} >= 2 AND {o} >= 1 AND {o} < {i} AND {d} = 0 THEN {O.COLLAPSED.value} "
        f"WHEN {i} >= 1 AND {o} = 0 AND {r} >= 1 THEN {O.DROPPED.value} "
        f"WHEN {i} >= 1 AND {o} = 0 AND {r} = 0 AND {p} >= 1 THEN {O.DROPPED_UNREPORTED.value} "
        f"WHEN {i} >= 2 AND {o} >= 1 AND {o} < {i} AND {o} + {d} = {i} "
        f"THEN {O.PARTIALLY_DROPPED.value} "
        f"WHEN {i} >= 1 AND {o} = 0 AND {d} = 0 THEN {O.ORPHANED.value} "
        f"WHEN {o} >= 1 AND {d} >= 1 THEN {O.CONFLICT.value} "
        f"WHEN {i} = 0 AND {o} >= 1 THEN {O.APPEARED.value} "
        f"WHEN {i} = 0 AND {o} = 0 AND {d} >= 1 THEN {O.PHANTOM_DROP.value} "
        "ELSE 0 END"
    )


def _final_of(outcome: str) -> str:
    """Final outcome of a key whose last leaving stage had `outcome`."""
    return (
        f"CASE {outcome} WHEN {O.DROPPED.value} THEN {Final.DROPPED.value} "
        f"WHEN {O.DROPPED_UNREPORTED.value} THEN {Final.DROPPED_UNREPORTED.value} "
        f"ELSE {Final.ORPHANED.value} END"
    )


def _anomalies_sql(run_pk: int, outcomes: str, target: str) -> str:
    skip = ", ".join(str(o.value) for o in UNREMARKABLE)
    return f"""
INSERT INTO {target} (run_pk, outcome, stage, key, rows_in, rows_out, rows_drop)
SELECT {int(run_pk)}, x.outcome, x.pos - 1, k.key, k.rows_in[x.pos], k.rows_out[x.pos],
       k.drop_rep[x.pos] + k.drop_ops[x.pos]
FROM {outcomes} k CROSS JOIN LATERAL unnest(k.outcomes) WITH ORDINALITY AS x(outcome, pos)
WHERE x.outcome NOT IN (0, {skip})
UNION ALL
SELECT {int(run_pk)}, {O.GRAIN_VIOLATION.value}, g.stage, k.key, k.rows_in[g.stage + 1],
       k.rows_out[g.stage + 1], k.drop_rep[g.stage + 1] + k.drop_ops[g.stage + 1]
FROM {outcomes} k CROSS JOIN LATERAL unnest(k.grain_violations) AS g(stage)
"""


def _reasons_sql(run_pk: int, trace_ids: Sequence[int], target: str) -> str:
    return f"""
INSERT INTO {target} (run_pk, key, stage, dataset_id, reason, rows)
SELECT {int(run_pk)}, key, stage, dataset_id, reason, rows
FROM dataset_keys WHERE dataset_id IN ({_ids(trace_ids)})
"""


def _stage_summaries(
    conn: Connection, run_pk: int, pipeline: Pipeline, outcomes: str
) -> list[dict[str, Any]]:
    counted = conn.execute(
        text(
            f"""
SELECT x.pos - 1 AS stage, x.outcome, count(*) AS keys, sum(k.rows_in[x.pos]) AS rows_in,
       sum(k.rows_out[x.pos]) AS rows_out, sum(k.drop_rep[x.pos] + k.drop_ops[x.pos]) AS rows_drop
FROM {outcomes} k CROSS JOIN LATERAL unnest(k.outcomes) WITH ORDINALITY AS x(outcome, pos)
WHERE x.outcome <> 0
GROUP BY 1, 2
"""
        )
    ).all()
    stage_totals = {
        r.stage: r
        for r in conn.execute(
            text(
                f"""
SELECT x.pos - 1 AS stage,
       count(*) FILTER (WHERE k.rows_in[x.pos] >= 1) AS keys_in,
       count(*) FILTER (WHERE k.rows_out[x.pos] >= 1) AS keys_out,
       count(*) FILTER (WHERE k.drop_rep[x.pos] + k.drop_ops[x.pos] >= 1) AS keys_dropped,
       sum(k.rows_in[x.pos]) AS rows_in, sum(k.rows_out[x.pos]) AS rows_out,
       sum(k.drop_rep[x.pos] + k.drop_ops[x.pos]) AS rows_drop
FROM {outcomes} k CROSS JOIN LATERAL unnest(k.outcomes) WITH ORDINALITY AS x(outcome, pos)
WHERE x.outcome <> 0
GROUP BY 1
"""
            )
        )
    }
    grain = dict(
        conn.execute(
            text(
                f"SELECT g.stage, count(*) FROM {outcomes} k "
                "CROSS JOIN LATERAL unnest(k.grain_violations) AS g(stage) GROUP BY 1"
            )
        ).all()
    )
    flags = flags_by_stage(conn, run_pk, pipeline, grain)
    summaries = []
    for s in pipeline.stages:
        keys = {o.label: 0 for o in STAGE_OUTCOMES}
        rows = {o.label: {"in": 0, "out": 0, "drop": 0} for o in STAGE_OUTCOMES}
        for r in counted:
            if r.stage == s.index:
                label = Outcome(r.outcome).label
                keys[label] = r.keys
                rows[label] = {
                    "in": int(r.rows_in),
                    "out": int(r.rows_out),
                    "drop": int(r.rows_drop),
                }
        summaries.append(
            {
                "run_pk": run_pk,
                "stage_index": s.index,
                "stage": s.name,
                "outcomes": keys,
                "rows": rows,
                "flags": flags[s.name],
                "totals": _stage_totals(stage_totals.get(s.index)),
            }
        )
    return summaries


def _stage_totals(row: Any) -> dict[str, int]:
    names = ("keys_in", "keys_out", "keys_dropped", "rows_in", "rows_out", "rows_drop")
    return {n: int(getattr(row, n) or 0) if row is not None else 0 for n in names}
