"""Two runs of one pipeline side by side (docs/semantics.md#comparing-runs): a run and its
rerun, or two marketing solutions.

The summary (the matrix of final outcomes, the stage-by-stage deltas, where changed
keys first differ) is set-based SQL in Postgres, never a run loaded into Python: one
full join of both runs' keys, final outcomes and one-letter outcome codes finds the
changed keys and where each first differs, kept by cell (`comparison_keys`); the
unchanged cells follow from each run's totals. The join merges the two runs' (key,
final, pattern) indexes, read alone (classification writes the rows frozen, all-visible),
then looks up the codes of each changed key's pattern:
about 0.4 s for two runs of 1M keys where hashing or sorting them took 1.3-2 s. The
result is kept in `comparisons` while neither run is classified again: asking twice,
or reading a rerun's reconciliation, reads one row, and a changed cell's page is a
range of an index however few keys it holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    column,
    delete,
    func,
    insert,
    select,
    table,
    text,
    update,
)

from tracer.errors import TracerError
from tracer.outcomes import STAGE_OUTCOMES, Final, StageCell, parse_stage_cells
from tracer.partitions import run_partition
from tracer.queries.common import RunInfo, load_run
from tracer.queries.pages import check_limit, decode_token, page
from tracer.queries.patterns import run_patterns
from tracer.tables import comparison_keys, comparisons, key_outcomes, key_patterns, stage_summaries

ABSENT = "absent"
"""The final outcome, in a comparison, of a key the other run has and this one lacks."""
OUTCOMES = (*(f.label for f in Final), ABSENT)
COMPARE_MEMORY = "256MB"
"""work_mem of the comparing transaction: the full join hashes one run's keys in memory."""


@dataclass(frozen=True)
class Pair:
    """Two comparable runs and the stages compared: A's, in its pipeline order, then B's own."""

    a: RunInfo
    b: RunInfo
    stages: tuple[str, ...]


def pair(conn: Connection, run_a: str, run_b: str) -> Pair:
    """Both runs, refused with a clear error unless they are runs of one pipeline and key."""
    a, b = load_run(conn, run_a, summary=True), load_run(conn, run_b, summary=True)
    if a.pipeline != b.pipeline:
        raise TracerError(
            f"runs {a.run_id!r} (pipeline {a.pipeline!r}) and {b.run_id!r} (pipeline "
            f"{b.pipeline!r}) belong to different pipelines: compare runs of one pipeline"
        )
    if (a.key, a.key_types) != (b.key, b.key_types):
        raise TracerError(
            f"runs {a.run_id!r} and {b.run_id!r} have different lineage keys "
            f"({_key_text(a)} vs {_key_text(b)}): their clients cannot be matched"
        )
    return Pair(a, b, a.stages + tuple(s for s in b.stages if s not in a.stages))


def _key_text(run: RunInfo) -> str:
    return ", ".join(f"{c} {t}" for c, t in zip(run.key, run.key_types, strict=True))


def compare(conn: Connection, run_a: str, run_b: str) -> dict[str, Any]:
    """`run_a`, `run_b`, `changed_keys`, `matrix`, `stages` and `first_differences`."""
    runs = pair(conn, run_a, run_b)
    result = _kept(conn, runs)
    if result is None:
        result = _compute(conn.engine, runs)
    return {"run_a": runs.a.run_id, "run_b": runs.b.run_id, **result}


def _where(runs: Pair, table: Any) -> Any:
    return and_(table.c.run_a_pk == runs.a.pk, table.c.run_b_pk == runs.b.pk)


def _kept(conn: Connection, runs: Pair) -> dict[str, Any] | None:
    """The kept comparison, if both runs still have the classification it was made from."""
    c = comparisons.c
    row = conn.execute(
        select(c.result, c.a_classified_at, c.b_classified_at).where(_where(runs, comparisons))
    ).first()
    if row is None or (row.a_classified_at, row.b_classified_at) != (
        runs.a.classified_at,
        runs.b.classified_at,
    ):
        return None
    return dict(row.result)


def _compute(engine: Engine, runs: Pair) -> dict[str, Any]:
    """Find the changed keys (one full join of the two runs' keys, final outcomes and outcome
    codes), keep them by cell, and summarise; in a transaction of its own, one per pair at a
    time."""
    with engine.begin() as work:
        work.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
            {"name": f"compare:{runs.a.pk}:{runs.b.pk}"},
        )
        kept = _kept(work, runs)  # computed meanwhile by another request
        if kept is not None:
            return kept
        work.execute(text(f"SET LOCAL work_mem = '{COMPARE_MEMORY}'"))
        work.execute(text("SET LOCAL jit = off"))  # compiling costs more than it saves here
        # Merge the runs' key-ordered indexes: at 1M keys a side, hashing one took 3x longer.
        work.execute(text("SET LOCAL enable_hashjoin = off"))
        work.execute(delete(comparisons).where(_where(runs, comparisons)))  # its keys too
        work.execute(
            insert(comparisons).values(
                run_a_pk=runs.a.pk,
                run_b_pk=runs.b.pk,
                a_classified_at=runs.a.classified_at,
                b_classified_at=runs.b.classified_at,
                result={},
            )
        )
        work.execute(text(_changed_sql(runs)), {"a": runs.a.pk, "b": runs.b.pk})
        ck = comparison_keys.c
        changed = work.execute(
            select(ck.a, ck.b, ck.first_stage, func.count().label("keys"))
            .where(_where(runs, comparison_keys))
            .group_by(ck.a, ck.b, ck.first_stage)
        ).all()
        result = {
            "changed_keys": sum(c.keys for c in changed),
            "matrix": _matrix(runs, changed),
            "stages": _stage_deltas(work, runs),
            "first_differences": [
                {"stage": stage, "keys": sum(c.keys for c in changed if c.first_stage == i)}
                for i, stage in enumerate(runs.stages)
            ],
        }
        work.execute(update(comparisons).where(_where(runs, comparisons)).values(result=result))
    return result


def _partition(run: RunInfo) -> str:
    """The run's own table of per-key rows, planned with its statistics (a query of the
    partitioned parent is planned with none)."""
    return run_partition(key_outcomes.name, run.pk)


def _code(side: str, run: RunInfo, stage: str) -> str:
    """SQL for a key's outcome letter at `stage` in one run ('@': none, or absent)."""
    if stage not in run.stages:
        return "'@'"
    position = run.stages.index(stage) + 1
    return f"coalesce(nullif(substr(coalesce({side}.codes, ''), {position}, 1), ''), '@')"


def _patterns_partition(run: RunInfo) -> str:
    return run_partition(key_patterns.name, run.pk)


def _changed_sql(runs: Pair) -> str:
    """Keep every key whose final outcome differs (0: absent from that run), by cell, with
    the first compared stage where its outcomes differ."""
    whens = " ".join(
        f"WHEN {_code('pa', runs.a, s)} <> {_code('pb', runs.b, s)} THEN {i}"
        for i, s in enumerate(runs.stages)
    )
    return f"""
INSERT INTO {comparison_keys.name} (run_a_pk, run_b_pk, a, b, key, first_stage)
SELECT :a, :b, coalesce(a.final, 0), coalesce(b.final, 0), coalesce(a.key, b.key),
       CASE {whens} END
FROM (SELECT key, final, pattern FROM {_partition(runs.a)}) AS a
FULL JOIN (SELECT key, final, pattern FROM {_partition(runs.b)}) AS b ON a.key = b.key
LEFT JOIN {_patterns_partition(runs.a)} AS pa ON pa.pattern = a.pattern
LEFT JOIN {_patterns_partition(runs.b)} AS pb ON pb.pattern = b.pattern
WHERE a.final IS DISTINCT FROM b.final
"""


def _label(code: int) -> str:
    return Final(code).label if code else ABSENT


def _matrix(runs: Pair, changed: list[Any]) -> list[dict[str, Any]]:
    """Every non-empty cell in final-outcome order (absent last). An unchanged cell holds
    the keys of its outcome in A that did not change: A's total less its changed cells."""
    cells: dict[tuple[int, int], int] = {}
    for c in changed:
        cells[c.a, c.b] = cells.get((c.a, c.b), 0) + int(c.keys)
    for f in Final:
        moved = sum(n for (a, _), n in cells.items() if a == f.value)
        cells[f.value, f.value] = int(runs.a.row.totals[f.label]) - moved
    order = sorted(cells, key=lambda ab: (ab[0] or len(Final) + 1, ab[1] or len(Final) + 1))
    return [{"a": _label(a), "b": _label(b), "keys": cells[a, b]} for a, b in order if cells[a, b]]


def _stage_deltas(conn: Connection, runs: Pair) -> list[dict[str, Any]]:
    """Distinct keys per stage and outcome in each run, and B - A; every outcome listed."""
    s = stage_summaries.c
    stored = {
        (row.run_pk, row.stage): row.outcomes
        for row in conn.execute(
            select(s.run_pk, s.stage, s.outcomes).where(s.run_pk.in_([runs.a.pk, runs.b.pk]))
        )
    }
    out = []
    for stage in runs.stages:
        a, b = stored.get((runs.a.pk, stage), {}), stored.get((runs.b.pk, stage), {})
        outcomes = {}
        for o in STAGE_OUTCOMES:
            x, y = int(a.get(o.label, 0)), int(b.get(o.label, 0))
            outcomes[o.label] = {"a": x, "b": y, "delta": y - x}
        out.append({"stage": stage, "outcomes": outcomes})
    return out


def _final_code(value: str, side: str) -> int:
    """0 for `absent`, else the final outcome's code; a clear error naming the side."""
    if value == ABSENT:
        return 0
    try:
        return Final[value.strip().upper()].value
    except KeyError:
        raise TracerError(
            f"{side} must be a final outcome or {ABSENT!r}: {', '.join(OUTCOMES)}; got {value!r}"
        ) from None


def compare_keys(
    conn: Connection,
    run_a: str,
    run_b: str,
    a: str,
    b: str,
    limit: int = 100,
    after: str | None = None,
) -> dict[str, Any]:
    """The keys of one matrix cell (final outcome `a` in run A, `b` in run B), in key order,
    each with where it first differs; the page's `total` is the cell's size.

    A changed cell is a range of the kept changed keys; an unchanged one is read from A's
    keys of that outcome, each looked up in B.
    """
    runs = pair(conn, run_a, run_b)
    fa, fb = _final_code(a, "a"), _final_code(b, "b")
    if not fa and not fb:
        raise TracerError("a key absent from both runs is in neither: give a or b an outcome")
    a, b = _label(fa), _label(fb)
    limit = check_limit(limit)
    scope = ("compare_keys", runs.a.run_id, runs.b.run_id, a, b)
    matrix = compare(conn, run_a, run_b)["matrix"]  # computed and kept on first use
    total = next((m["keys"] for m in matrix if (m["a"], m["b"]) == (a, b)), 0)
    last = decode_token(after, scope, (str,))[0] if after else None
    if fa != fb:
        ck = comparison_keys.c
        query = select(ck.key).where(_where(runs, comparison_keys), ck.a == fa, ck.b == fb)
        if last is not None:
            query = query.where(ck.key > last)
        keys = list(conn.execute(query.order_by(ck.key).limit(limit + 1)).scalars())
    else:
        d, o = _keys_table(runs.a).alias("d"), _keys_table(runs.b).alias("o")
        query = select(d.c.key).join_from(d, o, and_(o.c.key == d.c.key, o.c.final == fb))
        query = query.where(d.c.final == fa)
        if last is not None:
            query = query.where(d.c.key > last)
        keys = list(conn.execute(query.order_by(d.c.key).limit(limit + 1)).scalars())
    shown = keys[:limit]
    stages_a, stages_b = _stages_of(conn, runs.a, shown), _stages_of(conn, runs.b, shown)
    items = [
        {
            "key": runs.a.decode_key(key),
            "a": a,
            "b": b,
            "first_difference": first_difference(
                runs.stages, _cells(runs.a, stages_a.get(key)), _cells(runs.b, stages_b.get(key))
            ),
        }
        for key in shown
    ]
    next_key = (keys[limit - 1],) if len(keys) > limit else None
    return page(
        items, next_key, scope, run_a=runs.a.run_id, run_b=runs.b.run_id, a=a, b=b, total=total
    )


def _keys_table(run: RunInfo) -> Any:
    return table(_partition(run), column("key"), column("final"))


def _stages_of(conn: Connection, run: RunInfo, keys: list[str]) -> dict[str, str]:
    """The stored stages of a page of keys in one run (a key it lacks is left out)."""
    if not keys:
        return {}
    k = key_outcomes.c
    query = select(k.key, k.pattern).where(k.run_pk == run.pk, k.key.in_(keys))
    stages = run_patterns(conn, run)
    return {r.key: stages[r.pattern] for r in conn.execute(query)}


def _cells(run: RunInfo, stages: str | None) -> dict[str, StageCell]:
    if stages is None:
        return {}
    return {
        name: cell
        for name, cell in zip(run.stages, parse_stage_cells(stages), strict=True)
        if cell is not None
    }


def first_difference(
    stages: tuple[str, ...], a: Mapping[str, StageCell], b: Mapping[str, StageCell]
) -> dict[str, str] | None:
    """The first stage, in pipeline order, where the key's outcomes differ (`absent` where
    it has none); None when they agree at every stage."""
    for stage in stages:
        x = a[stage].outcome.label if stage in a else ABSENT
        y = b[stage].outcome.label if stage in b else ABSENT
        if x != y:
            return {"stage": stage, "a": x, "b": y}
    return None
