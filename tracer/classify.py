"""Classification of a run: the outcome table of docs/semantics.md, set-based in DuckDB.

The run's per-key rows (one chunk set per dataset, written by ingestion) are read as
Parquet; full joins of the stage outputs line every key's stages up in columns (out,
distinct grains, reported and operational drops); `in(k)` of each stage is an expression
over its parents' columns (routed splits included) and the outcome a CASE generated from
tracer.outcomes.OUTCOME_RULES in first-match order. A key's outcomes and counts at every
stage are its pattern, and everything else about it follows from the pattern: the run's
few patterns (with their finals and causes) and each key's pattern are what is kept. One
row per key, the patterns, the anomaly list's rare groups and the reasons are
binary-COPYed into fresh run partitions; stage summaries and run totals are sums over the
patterns. Measured on this machine type, classifying in DuckDB in the worker and storing
one row per key was the fastest shape.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pgpq
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Integer,
    SmallInteger,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    text,
    update,
)

from tracer.chunks import ChunkKind, LocalChunks, duckdb_connection
from tracer.errors import TracerError
from tracer.model import DatasetRole, Pipeline, RunStatus, Stage
from tracer.outcomes import (
    COUNT_VARIABLES,
    ENTRY_RULE,
    FANOUT_EXPECTED,
    GRAIN_DISTINCT,
    OUTCOME_RULES,
    STAGE_OUTCOMES,
    UNREMARKABLE,
    Final,
    Outcome,
    Rule,
)
from tracer.partitions import attach_loaded_tables, create_loading_tables, index_loaded_table
from tracer.reconcile import flags_by_stage, run_totals
from tracer.tables import (
    anomalies,
    dataset_chunks,
    datasets,
    key_outcomes,
    key_patterns,
    key_reasons,
    runs,
    stage_summaries,
)

_BATCH = 1 << 16  # rows per Arrow batch COPYed: a few MB encoded, whatever the run's size
# DuckDB spills to disk beyond this. With chunks read in place 1 GB ran 1M clients fastest,
# but a 5M-client worker then peaked at 1.6 GB; at 768 MB it peaked at 1.24 GB for the same
# CPU time (2026-12-02), and 1M clients fit either way.
CLASSIFY_MEMORY = "768MB"
# What a run whose datasets hold no keyed row at all reads instead of chunks.
_NO_ROWS = (
    "(SELECT 0::INTEGER AS dataset_id, 0::TINYINT AS kind, 0::SMALLINT AS stage, "
    "NULL::VARCHAR AS key, 0 AS rows, 0 AS grains, NULL::VARCHAR AS reason WHERE false)"
)


def classify_run(
    conn: Connection, run_pk: int, pipeline: Pipeline, local: LocalChunks | None = None
) -> None:
    """Recompute every outcome of the run from its ingested datasets, atomically: from their
    chunk files in `local` for a run ingested in one pass, else from `dataset_chunks`."""
    rows = conn.execute(
        select(datasets.c.id, datasets.c.role, datasets.c.name).where(datasets.c.run_pk == run_pk)
    ).all()
    conn.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))  # index builds at attach
    with tempfile.TemporaryDirectory(prefix="tracer-classify-") as tmp:
        if local is None:
            spilled = _spill_chunks(conn, run_pk, [r.id for r in rows], Path(tmp))
        else:
            spilled = local.files
        files = _RunFiles(
            outputs={
                pipeline.stage(r.name).index: spilled.get(r.id, [])
                for r in rows
                if r.role == DatasetRole.OUTPUT
            },
            traces=[
                f for r in rows if r.role == DatasetRole.TRACEABILITY for f in spilled.get(r.id, [])
            ],
            int_keys=tuple(pipeline.key_types) == ("int64",),
        )
        duck = duckdb_connection(memory_limit=CLASSIFY_MEMORY)
        duck.execute(f"SET temp_directory = '{Path(tmp) / 'spill'}'")
        try:
            tables = create_loading_tables(conn, run_pk)
            # The reasons come from the trace chunks alone: Postgres loads and indexes them
            # while DuckDB classifies (the connection is the thread's until it ends).
            with ThreadPoolExecutor(1) as pool:
                reasons = pool.submit(_load_reasons, conn, duck.cursor(), run_pk, tables, files)
                _classify(duck, pipeline, files)
            reasons.result()
            summaries = _stage_summaries(conn, duck, run_pk, pipeline)
            keys = duck.execute("SELECT count(*) FROM key_hashes").fetchall()[0][0]
            _copy(
                conn,
                (key_outcomes, tables["key_outcomes"]),
                duck,
                _key_outcomes_select(run_pk),
                _KEY_OUTCOME_COLUMNS,
            )
            _copy(conn, (key_patterns, tables["key_patterns"]), duck, _key_patterns_select(run_pk))
            dense = dense_groups(summaries, keys)
            _copy(
                conn,
                (anomalies, tables["anomalies"]),
                duck,
                _anomalies_select(pipeline, run_pk, dense),
            )
            for table in (key_outcomes, key_patterns, anomalies):
                _analyze(conn, tables[table.name])
            totals, cells = run_totals(duck, summaries)
        finally:
            duck.close()
    attach_loaded_tables(conn, run_pk, indexed={key_reasons.name})
    conn.execute(delete(stage_summaries).where(stage_summaries.c.run_pk == run_pk))
    conn.execute(insert(stage_summaries), summaries)
    conn.execute(
        update(runs)
        .where(runs.c.pk == run_pk)
        .values(
            status=RunStatus.CLASSIFIED,
            error=None,
            totals=totals,
            gap_cells=cells,
            classified_at=func.now(),
        )
    )


def _load_reasons(
    conn: Connection,
    duck: duckdb.DuckDBPyConnection,
    run_pk: int,
    tables: Mapping[str, str],
    files: _RunFiles,
) -> None:
    """The run's reasons COPYed, indexed and analysed, on a DuckDB connection of its own
    (closed here). At 5M clients this is 1.7 s of Postgres work the classification hides."""
    try:
        _copy(conn, (key_reasons, tables["key_reasons"]), duck, _reasons_select(run_pk, files))
    finally:
        duck.close()
    index_loaded_table(conn, run_pk, key_reasons)
    _analyze(conn, tables["key_reasons"])


def _analyze(conn: Connection, name: str) -> None:
    """Statistics now, not when autovacuum gets to it: the first questions asked of a fresh
    run (gap-cell and comparison pages, the reasons of a batch lookup: without them a
    reasons query scans the whole partition) are planned with them."""
    conn.execute(text(f"ANALYZE {name}"))


@dataclass(frozen=True)
class _RunFiles:
    outputs: dict[int, list[str]]  # stage index -> its output's chunk files
    traces: list[str]
    # A one-column int64 key: joined as BIGINT inside DuckDB (hashing and comparing integers
    # instead of text took a third off the per-key join at 1M clients), written as text.
    int_keys: bool = False

    def read(self, files: list[str], typed: bool = True) -> str:
        """The chunk files as a relation, with keys typed as the classifier joins them
        (`typed`); an empty one, typed alike, when there are none."""
        if not files:
            relation = _NO_ROWS
        else:
            quoted = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            relation = f"read_parquet([{quoted}])"
        if typed and self.int_keys:
            return f"(SELECT * REPLACE (CAST(key AS BIGINT) AS key) FROM {relation})"
        return relation


def _spill_chunks(
    conn: Connection, run_pk: int, dataset_ids: Sequence[int], folder: Path
) -> dict[int, list[str]]:
    """Write the run's chunks to local Parquet files so DuckDB can stream (and spill) them."""
    files: dict[int, list[str]] = {}
    query = (
        select(dataset_chunks.c.dataset_id, dataset_chunks.c.seq, dataset_chunks.c.data)
        .where(dataset_chunks.c.run_pk == run_pk, dataset_chunks.c.dataset_id.in_(dataset_ids))
        .execution_options(stream_results=True, yield_per=4)
    )
    for dataset_id, seq, data in conn.execute(query):
        path = folder / f"{dataset_id}-{seq}.parquet"
        path.write_bytes(data)
        files.setdefault(dataset_id, []).append(str(path))
    return files


def _columns(i: int) -> dict[str, str]:
    """The classifier's columns for the stage at index `i`, by the contract's count names."""
    return {
        "in": f"rows_in_{i}",
        "out": f"rows_out_{i}",
        "drop_rep": f"drop_reported_{i}",
        "drop_ops": f"drop_operational_{i}",
        "drop": f"(drop_reported_{i} + drop_operational_{i})",
        "grains": f"grains_{i}",
        "outcome": f"outcome_{i}",
        "over": f"over_grain_{i}",  # 1 where out > grains: a grain violation
    }


def _all_columns(pipeline: Pipeline) -> list[dict[str, str]]:
    return [_columns(s.index) for s in pipeline.stages]


def _pattern_columns(pipeline: Pipeline) -> list[str]:
    """What a key's pattern is made of: its outcome and counts at every stage."""
    return [
        c[name]
        for c in _all_columns(pipeline)
        for name in ("outcome", "in", "out", "drop_rep", "drop_ops", "over")
    ]


_SALTS = 8


def _patterns(duck: duckdb.DuckDBPyConnection, pipeline: Pipeline, per_stage: str) -> str:
    """Table `patterns`: the distinct per-stage patterns of the run's keys with how many keys
    have each, numbered from 1, with their text as `key_patterns` stores it and the final
    outcome and gap causes they imply. Returns the SQL of a key's `pattern_hash` there: a
    64-bit hash of its pattern, salted until no two of the run's patterns share one."""
    columns = ", ".join(_pattern_columns(pipeline))
    duck.execute(
        f"CREATE TABLE pattern_counts AS SELECT {columns}, count(*) AS keys "
        f"FROM ({per_stage}) GROUP BY ALL"
    )
    for salt in range(_SALTS):
        hashed = f"hash({columns}, {salt})"
        distinct, total = duck.execute(
            f"SELECT count(DISTINCT {hashed}), count(*) FROM pattern_counts"
        ).fetchall()[0]
        if distinct == total:
            break
    else:  # eight 64-bit collisions among a run's few hundred patterns: never seen
        raise TracerError("pattern hashes collide whatever the salt; please report this run")
    cells = [
        f"CASE WHEN {c['outcome']} = 0 THEN '' ELSE concat_ws(',', {c['outcome']}, {c['in']}, "
        f"{c['out']}, {c['drop_rep']}, {c['drop_ops']}, {c['over']}) END"
        for c in _all_columns(pipeline)
    ]
    codes = ", ".join(f"chr(64 + {c['outcome']})" for c in _all_columns(pipeline))
    finals = [
        *_final_columns(pipeline), *_cause_columns(pipeline, False),
        *_cause_columns(pipeline, True),
    ]  # fmt: skip
    # Numbered in the byte order of their text, as migration 0008 numbers stored runs: a
    # pattern's number depends on the run's patterns alone (tracer.queries.patterns keeps
    # them by classification).
    duck.execute(
        "CREATE TABLE patterns AS SELECT row_number() OVER (ORDER BY stages)::INTEGER AS "
        f"pattern, * FROM (SELECT *, {hashed} AS pattern_hash, {', '.join(finals)}, "
        f"concat_ws(';', {', '.join(cells)}) AS stages, concat({codes}) AS codes "
        "FROM pattern_counts)"
    )
    duck.execute("DROP TABLE pattern_counts")
    return hashed


# Stage outputs joined onto a run's keys in one statement while their hash tables fit in
# CLASSIFY_MEMORY: at most this many keys times outputs a statement. At 5M clients all
# seven at once spilled (5.4 s), six ran out of memory, two at a time took 2.6-2.9 s; at
# 1M clients all seven in one statement stay the fastest (0.35 s).
_JOINED_KEYS = 12_000_000


def _classify(duck: duckdb.DuckDBPyConnection, pipeline: Pipeline, files: _RunFiles) -> None:
    """Build view `key_finals`: per key, each stage's counts and outcome, and the final outcome.

    The chunk files are read where needed, never loaded whole: each stage's output
    (one row per key) is hash-joined onto the run's keys (`_key_rows`), which at 1M
    clients took 1.7 s where a 28-aggregate FILTER pivot took 2.9 s. Everything else a
    key has is a function of its pattern (its outcome and counts at every stage), and a
    run's keys share a few dozen patterns: the in-expressions and outcomes, projections
    stacked on the joined rows, are computed twice (once to count the patterns, once to
    hash each key's), and what is stored per key is its hash alone. At 5M clients a
    table of every per-stage column spilled (1.2 GB) and took 3.1 s to write.
    """
    _trace_rows(duck, pipeline, files)
    _key_rows(duck, pipeline, files)
    inputs = [
        f"({_in_expr(pipeline, s)})::INTEGER AS {_columns(s.index)['in']}" for s in pipeline.stages
    ]
    outcomes = [f"{_outcome_expr(s)} AS {_columns(s.index)['outcome']}" for s in pipeline.stages]
    over = [f"({c['out']} > {c['grains']})::INTEGER AS {c['over']}" for c in _all_columns(pipeline)]
    filled = [
        f"coalesce({c[name]}, 0)::INTEGER AS {c[name]}"
        for c in _all_columns(pipeline)
        for name in ("out", "grains", "drop_rep", "drop_ops")
    ]
    per_stage = (
        f"SELECT *, {', '.join(over)} FROM (SELECT *, {', '.join(outcomes)} FROM ("
        f"SELECT *, {', '.join(inputs)} FROM (SELECT key, {', '.join(filled)} FROM key_rows)))"
    )
    hashed = _patterns(duck, pipeline, per_stage)
    duck.execute(
        f"CREATE TABLE key_hashes AS SELECT key, {hashed} AS pattern_hash FROM ({per_stage})"
    )
    duck.execute("DROP TABLE key_rows")
    duck.execute(
        "CREATE VIEW key_finals AS SELECT * FROM key_hashes JOIN patterns USING (pattern_hash)"
    )


def _trace_rows(duck: duckdb.DuckDBPyConnection, pipeline: Pipeline, files: _RunFiles) -> None:
    """Table `trace_rows`: per key, its reported and operational drop rows at every stage."""
    sums = ", ".join(
        f"coalesce(sum(rows) FILTER (WHERE kind = {kind.value} AND stage = {s.index}), 0)::INTEGER "
        f"AS {_columns(s.index)[name]}"
        for s in pipeline.stages
        for name, kind in (("drop_rep", ChunkKind.REPORTED), ("drop_ops", ChunkKind.OPERATIONAL))
    )
    duck.execute(
        f"CREATE TABLE trace_rows AS SELECT key, {sums} "
        f"FROM {files.read(files.traces)} GROUP BY key"
    )


def _key_rows(duck: duckdb.DuckDBPyConnection, pipeline: Pipeline, files: _RunFiles) -> None:
    """Table `key_rows`: every key of the run with its output rows and grains per stage and
    its drops (`trace_rows`), NULL where it has none.

    The run's keys are those a chain of full joins keeps: each stage's output, then the
    traced keys, joined on in turn, a few a statement (_JOINED_KEYS). At 5M
    clients this took 2.8-3.2 s where the distinct keys of every file, left-joined to
    each output, took 3.9-4.5 s.
    """
    biggest = max(
        (duck.execute(f"SELECT count(*) FROM {files.read(f)}").fetchall()[0][0]
         for f in files.outputs.values()),
        default=0,
    )  # fmt: skip
    step = max(1, _JOINED_KEYS // max(biggest, 1))
    outputs = [
        f"(SELECT key, rows AS {c['out']}, grains AS {c['grains']} "
        f"FROM {files.read(files.outputs.get(s.index, []))})"
        for s in pipeline.stages
        for c in (_columns(s.index),)
    ]
    # The drops last: their columns are not copied from one statement to the next.
    first, *rest = [*outputs, "trace_rows"]
    duck.execute(f"CREATE TABLE key_rows AS SELECT * FROM {first}")
    for start in range(0, len(rest), step):
        joins = " ".join(f"FULL JOIN {r} USING (key)" for r in rest[start : start + step])
        duck.execute(f"CREATE TABLE key_rows_joined AS SELECT * FROM key_rows {joins}")
        duck.execute("DROP TABLE key_rows")
        duck.execute("ALTER TABLE key_rows_joined RENAME TO key_rows")
    duck.execute("DROP TABLE trace_rows")


def _final_columns(pipeline: Pipeline) -> list[str]:
    """The final outcome and the gap's three questions (docs/semantics.md#journeys, #gap)."""

    def any_out(names: Sequence[str]) -> str:
        return " OR ".join(f"{_columns(pipeline.stage(n).index)['out']} > 0" for n in names)

    finals, roots = any_out(pipeline.graph.finals), any_out(pipeline.graph.roots)
    left = " ".join(
        f"WHEN {c['in']} >= 1 AND {c['out']} = 0 THEN {_final_of(c['outcome'])}"
        for c in (_columns(s.index) for s in reversed(pipeline.stages))
    )
    columns = _all_columns(pipeline)
    traced = " + ".join(c["drop"] for c in columns)
    reported = " + ".join(c["drop_rep"] for c in columns)
    return [
        f"CASE WHEN {finals} THEN {Final.TARGETED.value} {left} "
        f"ELSE {Final.NEVER_ENTERED.value} END AS final",
        f"({roots}) AS entered",
        f"({finals}) AS targeted",
        f"({traced}) > 0 AS traced",
        f"({reported}) > 0 AS traced_reported",
    ]


def _cause_columns(pipeline: Pipeline, reporting: bool) -> list[str]:
    """Each key's cause in its gap cell (docs/semantics.md#causes): a stage index and the
    outcome there, NULL in the `targeted` cell. Refers to the final columns by their aliases.

    Entered and not targeted: where the key left (the stage of its final outcome). Targeted
    and traced: the first stage a traceability row (a reported one, for the reporting gap)
    is attributed to. Not entered: the first stage where the key has an outcome.
    """
    columns = _all_columns(pipeline)

    def first(condition: str, order: list[int]) -> str:
        whens = " ".join(f"WHEN {condition.format(**columns[i])} THEN {i}" for i in order)
        return f"CASE {whens} END"

    forward = list(range(len(columns)))
    left = first("{in} >= 1 AND {out} = 0", forward[::-1])
    logged = first("{drop_rep} > 0" if reporting else "{drop} > 0", forward)
    shown = first("{outcome} <> 0", forward)
    traced = "traced_reported" if reporting else "traced"
    prefix = "reporting_" if reporting else ""
    outcomes = ", ".join(c["outcome"] for c in columns)
    return [
        f"CASE WHEN entered AND NOT targeted THEN {left} "
        f"WHEN entered AND {traced} THEN {logged} WHEN NOT entered THEN {shown} END "
        f"AS {prefix}cause_stage",
        f"[{outcomes}][{prefix}cause_stage + 1] AS {prefix}cause_outcome",
    ]


TEXT_KEY = "CAST(key AS VARCHAR)"
"""A key of `key_finals` as stored: the encoded text (tracer.keys), whichever type joined."""


def _present(stage: Stage) -> str:
    c = _columns(stage.index)
    return f"({c['out']} + {c['drop']} > 0)"


def _in_expr(pipeline: Pipeline, stage: Stage) -> str:
    """in(k) at `stage`: parents' rows summed; a routed parent's only where k was routed here."""
    if not stage.parents:
        return "0"
    terms = []
    for name in stage.parents:
        parent = pipeline.stage(name)
        rows = _columns(parent.index)["out"]
        if parent.split_route:
            siblings = " OR ".join(_present(pipeline.stage(c)) for c in parent.children)
            rows = f"CASE WHEN {_present(stage)} OR NOT ({siblings}) THEN {rows} ELSE 0 END"
        terms.append(rows)
    return " + ".join(terms)


def _outcome_expr(stage: Stage) -> str:
    """The outcome table as one CASE, generated from tracer.outcomes.OUTCOME_RULES in order."""
    rules = (ENTRY_RULE, *OUTCOME_RULES) if not stage.parents else OUTCOME_RULES
    columns = _columns(stage.index)
    branches = (
        f"WHEN {condition} THEN {rule.outcome.value}"
        for rule in rules
        if (condition := rule_sql(rule, columns, stage.fanout_expected)) is not None
    )
    return f"CASE {' '.join(branches)} ELSE 0 END"


_COMPARISON = re.compile(r"\s*(<=|>=|=|<|>)\s*")


def rule_sql(rule: Rule, columns: Mapping[str, str], fanout_expected: bool) -> str | None:
    """A rule's clauses as one SQL condition over `columns`; None where the rule cannot apply.

    `1 <= out < in` reads as `1 <= out AND out < in`, as in Python.
    """
    sql = []
    for clause in rule.clauses:
        if clause == FANOUT_EXPECTED:
            if not fanout_expected:
                return None
            continue
        if clause == GRAIN_DISTINCT:
            sql.append(f"{columns['grains']} = {columns['out']}")
            continue
        parts = _COMPARISON.split(clause)
        terms = [_term_sql(t, columns, clause) for t in parts[0::2]]
        for left, op, right in zip(terms, parts[1::2], terms[1:], strict=False):
            sql.append(f"{left} {op} {right}")
    return " AND ".join(sql)


def _term_sql(term: str, columns: Mapping[str, str], clause: str) -> str:
    """`out + drop` or `2`: the contract's count names mapped to columns."""
    parts = []
    for name in (p.strip() for p in term.split("+")):
        if name.isdigit():
            parts.append(name)
        elif name in COUNT_VARIABLES:
            parts.append(columns[name])
        else:
            raise ValueError(f"outcome rule clause {clause!r}: unknown count {name!r}")
    return " + ".join(parts)


def _final_of(outcome: str) -> str:
    """Final outcome of a key whose last leaving stage had `outcome`."""
    return (
        f"CASE {outcome} WHEN {Outcome.DROPPED.value} THEN {Final.DROPPED.value} "
        f"WHEN {Outcome.DROPPED_UNREPORTED.value} THEN {Final.DROPPED_UNREPORTED.value} "
        f"ELSE {Final.ORPHANED.value} END"
    )


_CAUSES = ("cause_stage", "cause_outcome", "reporting_cause_stage", "reporting_cause_outcome")
_KEY_OUTCOME_COLUMNS = (
    "run_pk", "key", "final", "entered", "targeted", "traced", "traced_reported", "pattern",
    *_CAUSES,
)  # fmt: skip
"""The columns `_key_outcomes_select` gives, in its order: COPY names them, so a column
another migration adds to the table cannot shift them."""


def _key_outcomes_select(run_pk: int) -> str:
    """One row per key: its final outcome, its pattern (`key_patterns`), its gap causes."""
    return f"""
SELECT {int(run_pk)} AS run_pk, {TEXT_KEY} AS key, final, entered, targeted, traced,
       traced_reported, pattern, {", ".join(_CAUSES)}
FROM key_finals
"""


def _key_patterns_select(run_pk: int) -> str:
    return f"SELECT {int(run_pk)} AS run_pk, pattern, stages, codes FROM patterns"


DENSE_SHARE = 0.02
DENSE_MIN_KEYS = 10_000
"""A (stage, outcome) group of the anomaly list with at least this share of the run's keys,
and at least this many, is listed from `key_outcomes` (its codes, or its stages for a grain
violation) in key order, not stored again: a page of it scans at most 1 / DENSE_SHARE keys
per item. At 1M clients this leaves out ~0.9M rows (`expanded`, `partially_dropped`, grain
violations of stages without a grain), most of what the list held."""


def dense_groups(summaries: list[dict[str, Any]], keys: int) -> set[tuple[int, Outcome]]:
    """The (stage index, outcome) groups of the anomaly list not stored in `anomalies`."""
    floor = max(DENSE_MIN_KEYS, DENSE_SHARE * keys)
    dense = set()
    for s in summaries:
        counted = {Outcome.parse(label): n for label, n in s["outcomes"].items()}
        counted[Outcome.GRAIN_VIOLATION] = s["flags"]["grain_violation"]
        for outcome, n in counted.items():
            if outcome not in UNREMARKABLE and n and n >= floor:
                dense.add((s["stage_index"], outcome))
    return dense


def _anomalies_select(
    pipeline: Pipeline, run_pk: int, dense: Collection[tuple[int, Outcome]] = ()
) -> str:
    """The anomaly list's rows to store: every group but the dense ones."""
    skip = ", ".join(str(o.value) for o in UNREMARKABLE)
    grain = Outcome.GRAIN_VIOLATION
    parts = []
    for s in pipeline.stages:
        c = _columns(s.index)
        row = (
            f"{int(run_pk)}, {{outcome}}, {s.index}, {TEXT_KEY}, {c['in']}, {c['out']}, {c['drop']}"
        )
        left_out = ", ".join(str(o.value) for i, o in sorted(dense) if i == s.index)
        parts.append(
            f"SELECT {row.format(outcome=c['outcome'])} FROM key_finals "
            f"WHERE {c['outcome']} NOT IN (0, {skip}{', ' + left_out if left_out else ''})"
        )
        if (s.index, grain) not in dense:
            parts.append(
                f"SELECT {row.format(outcome=grain.value)} FROM key_finals WHERE {c['over']} = 1"
            )
    return "\nUNION ALL\n".join(parts)


def _reasons_select(run_pk: int, files: _RunFiles) -> str:
    relation = files.read(files.traces, typed=False)
    return f"SELECT {int(run_pk)}, key, stage, dataset_id, reason, rows FROM {relation}"


_ARROW_TYPES: dict[type, pa.DataType] = {
    SmallInteger: pa.int16(),
    Integer: pa.int32(),
    BigInteger: pa.int64(),
    Boolean: pa.bool_(),
    Text: pa.string(),
}
"""What each column type of the run tables is sent as in binary COPY (exactly its width)."""


def _copy(
    conn: Connection,
    target: tuple[Table, str],
    duck: duckdb.DuckDBPyConnection,
    query: str,
    columns: Sequence[str] | None = None,
) -> None:
    """Stream a DuckDB result into a Postgres table with binary COPY, encoded from Arrow
    batches by pgpq: at 1M keys it took a third less time than CSV, which Postgres parses
    field by field. The query's columns are taken in order as `columns` (default: all of
    the table's), each cast to the column's exact type, as binary COPY requires.

    FREEZE: the table was made in this transaction, so its rows are written frozen and its
    pages all-visible; index-only scans (a comparison's join) need no vacuum first.
    """
    table, name = target
    names = list(columns or table.columns.keys())
    schema = pa.schema(
        [pa.field(n, _ARROW_TYPES[type(table.c[n].type)], table.c[n].nullable) for n in names]
    )
    encoder = pgpq.ArrowToPostgresBinaryEncoder(schema)
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(
        f"COPY {name} ({', '.join(names)}) FROM STDIN (FORMAT binary, FREEZE)"
    ) as copy:
        copy.write(encoder.write_header())
        for batch in duck.sql(query).to_arrow_reader(_BATCH):
            cast = [
                pc.cast(column, field.type)
                for column, field in zip(batch.columns, schema, strict=True)
            ]
            copy.write(encoder.write_batch(pa.RecordBatch.from_arrays(cast, schema=schema)))
        copy.write(encoder.finish())


_ROW_COUNTS = ("rows_in", "rows_out", "rows_dropped")
"""Rows per stage and outcome, named as every answer names them."""


def _stage_summaries(
    conn: Connection, duck: duckdb.DuckDBPyConnection, run_pk: int, pipeline: Pipeline
) -> list[dict[str, Any]]:
    """Keys and rows per stage and outcome, and the stage's flags, from one pass per stage."""
    parts = [
        f"SELECT {s.index} AS stage, {c['outcome']} AS outcome, sum(keys) AS keys, "
        f"sum({c['in']} * keys) AS rows_in, sum({c['out']} * keys) AS rows_out, "
        f"sum({c['drop']} * keys) AS rows_dropped, "
        f"coalesce(sum(keys) FILTER (WHERE {c['in']} >= 1), 0) AS keys_in, "
        f"coalesce(sum(keys) FILTER (WHERE {c['out']} >= 1), 0) AS keys_out, "
        f"coalesce(sum(keys) FILTER (WHERE {c['drop']} >= 1), 0) AS keys_dropped, "
        f"coalesce(sum(keys) FILTER (WHERE {c['over']} = 1), 0) AS grain_violations "
        f"FROM patterns WHERE {c['outcome']} <> 0 GROUP BY {c['outcome']}"
        for s in pipeline.stages
        for c in (_columns(s.index),)
    ]
    counted = duck.execute("\nUNION ALL\n".join(parts)).fetchall()
    columns = ("stage", "outcome", "keys", "rows_in", "rows_out", "rows_dropped", "keys_in",
               "keys_out", "keys_dropped", "grain_violations")  # fmt: skip
    rows = [dict(zip(columns, r, strict=True)) for r in counted]
    grain = {
        s.index: sum(r["grain_violations"] for r in rows if r["stage"] == s.index)
        for s in pipeline.stages
    }
    flags = flags_by_stage(conn, run_pk, pipeline, grain)
    summaries = []
    for s in pipeline.stages:
        mine = [r for r in rows if r["stage"] == s.index]
        keys = {o.label: 0 for o in STAGE_OUTCOMES}
        moved = {o.label: dict.fromkeys(_ROW_COUNTS, 0) for o in STAGE_OUTCOMES}
        for r in mine:
            label = Outcome(r["outcome"]).label
            keys[label] = int(r["keys"])
            moved[label] = {name: int(r[name]) for name in _ROW_COUNTS}
        totals = {
            name: int(sum(r[name] for r in mine))
            for name in ("keys_in", "keys_out", "keys_dropped", *_ROW_COUNTS)
        }
        summaries.append(
            {
                "run_pk": run_pk,
                "stage_index": s.index,
                "stage": s.name,
                "outcomes": keys,
                "rows": moved,
                "flags": flags[s.name],
                "totals": totals,
            }
        )
    return summaries
