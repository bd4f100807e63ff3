"""Independent checks of the demo data written by ``tracer.demo``.

Why: the demo's answer key (``planted`` & co.) is what the tracer's own tests
trust, so it must be right. These tests recompute in / out / drop per key
straight from the written Parquet with DuckDB, following
docs docs/semantics.md by hand, and compare with every claim. No tracer
core and no database are used, only the module under test, DuckDB, pyarrow
and the manifest it wrote.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from tracer import demo

# The outcome table of docs/semantics.md#outcomes, as SQL: every
# (S, k) with in + out + drop > 0 gets the FIRST row whose condition holds, so
# the order of the WHEN branches is the order of the table. "distinct" means
# S's rows for k are distinct on S's grain; "first" means S has no parent.
OUTCOME_CASE = """
CASE
  WHEN {first} THEN CASE WHEN out_n >= 1 THEN 'entered' END
  WHEN in_n >= 1 AND out_n = in_n AND drop_n = 0 THEN 'passed'
  WHEN in_n >= 1 AND out_n > in_n AND drop_n = 0 AND {fanout} AND out_n = grain_n
    THEN 'expanded'
  WHEN in_n >= 1 AND out_n > in_n THEN 'multiplied'
  WHEN in_n >= 2 AND out_n >= 1 AND out_n < in_n AND drop_n = 0 THEN 'collapsed'
  WHEN in_n >= 1 AND out_n = 0 AND rep_n >= 1 THEN 'dropped'
  WHEN in_n >= 1 AND out_n = 0 AND rep_n = 0 AND ops_n >= 1 THEN 'dropped_unreported'
  WHEN in_n >= 2 AND out_n >= 1 AND out_n < in_n AND out_n + drop_n = in_n
    THEN 'partially_dropped'
  WHEN in_n >= 1 AND out_n = 0 AND drop_n = 0 THEN 'orphaned'
  WHEN out_n >= 1 AND drop_n >= 1 THEN 'conflict'
  WHEN in_n = 0 AND out_n >= 1 THEN 'appeared'
  WHEN in_n = 0 AND out_n = 0 AND drop_n >= 1 THEN 'phantom_drop'
END
"""

# Per-key outcomes that are the normal flow and so are not listed in the answer key.
UNLISTED = {"passed", "entered"}

KEY = "client_id"


def _source(root: Path, rel: str) -> str:
    """DuckDB read of a file or a Spark-style directory (hive folders are columns)."""
    path = root / rel
    if path.is_dir():
        return f"read_parquet('{path}/**/*.parquet', hive_partitioning = true)"
    return f"read_parquet('{path}')"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo build shared by the module (building takes about a second)."""
    directory = tmp_path_factory.mktemp("demo")
    manifest = demo.build_demo(directory)
    assert manifest == directory / "manifest.yaml"
    return directory


@pytest.fixture(scope="module")
def manifest(built: Path) -> dict[str, Any]:
    return yaml.safe_load((built / "manifest.yaml").read_text())


@pytest.fixture(scope="module")
def stages(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return manifest["pipeline"]["stages"]


@pytest.fixture(scope="module")
def con(built: Path, manifest: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """Views over every dataset named by the manifest, plus one `drops` view.

    `drops` normalises the traceability sources as docs/semantics.md
    ("Keys": a mapping of key column names is allowed; a stage column or one
    fixed stage attributes each row to a stage; a source is reported or not).
    """
    connection = duckdb.connect()
    run = manifest["run"]
    for name, rel in {**run["outputs"], **run["traceability"]}.items():
        connection.execute(f'CREATE VIEW "{name}" AS SELECT * FROM {_source(built, rel)}')
    parts = []
    for source in manifest["pipeline"]["traceability"]:
        key = source.get("columns", {}).get(KEY, KEY)
        stage = source["stage_column"] if "stage_column" in source else f"'{source['stage']}'"
        parts.append(
            f'SELECT "{key}" AS k, {stage} AS stage, {bool(source["reported"])} AS reported, '
            f'"{source["reason_column"]}" AS reason FROM "{source["name"]}"'
        )
    connection.execute("CREATE VIEW drops AS " + " UNION ALL ".join(parts))
    return connection


def _stage_table(
    con: duckdb.DuckDBPyConnection, stages: list[dict[str, Any]], index: int
) -> list[tuple[int, int, int, int, str]]:
    """(key, in, out, drop, outcome) for every key with in + out + drop > 0 at a stage.

    docs/semantics.md#outcomes: in = rows in the parent's output
    (parents default to the previous stage, architecture.md), out = rows in
    S's output, drop = traceability rows attributed to S; null keys are not keys.
    """
    stage = stages[index]
    name = stage["name"]
    grain = stage.get("grain", [KEY])
    parent = (
        f'SELECT {KEY} AS k FROM "{stages[index - 1]["name"]}"'
        if index
        else "SELECT NULL::BIGINT AS k"
    )
    case = OUTCOME_CASE.format(
        first="TRUE" if index == 0 else "FALSE",
        fanout="TRUE" if stage.get("fanout") == "expected" else "FALSE",
    )
    grain_row = ", ".join(f'"{c}"' for c in grain)
    sql = f"""
    WITH i AS (SELECT k, count(*) AS n FROM ({parent}) WHERE k IS NOT NULL GROUP BY k),
    o AS (
      SELECT {KEY} AS k, count(*) AS n, count(DISTINCT row({grain_row})) AS g
      FROM "{name}" WHERE {KEY} IS NOT NULL GROUP BY k
    ),
    d AS (
      SELECT k, count(*) FILTER (WHERE reported) AS rep, count(*) FILTER (WHERE NOT reported) AS ops
      FROM drops WHERE stage = $stage AND k IS NOT NULL GROUP BY k
    ),
    keys AS (SELECT k FROM i UNION SELECT k FROM o UNION SELECT k FROM d),
    t AS (
      SELECT keys.k, coalesce(i.n, 0) AS in_n, coalesce(o.n, 0) AS out_n,
             coalesce(o.g, 0) AS grain_n, coalesce(d.rep, 0) AS rep_n,
             coalesce(d.ops, 0) AS ops_n, coalesce(d.rep, 0) + coalesce(d.ops, 0) AS drop_n
      FROM keys LEFT JOIN i USING (k) LEFT JOIN o USING (k) LEFT JOIN d USING (k)
    )
    SELECT k, in_n, out_n, drop_n, {case} AS outcome FROM t
    """
    rows = con.execute(sql, {"stage": name}).fetchall()
    assert all(row[4] is not None for row in rows), f"unclassified key at {name}"
    return rows


@pytest.fixture(scope="module")
def tables(
    con: duckdb.DuckDBPyConnection, stages: list[dict[str, Any]]
) -> dict[str, list[tuple[int, int, int, int, str]]]:
    return {stage["name"]: _stage_table(con, stages, i) for i, stage in enumerate(stages)}


def _by_outcome(rows: list[tuple[int, int, int, int, str]]) -> dict[str, set[int]]:
    result: dict[str, set[int]] = {}
    for key, _in, _out, _drop, outcome in rows:
        result.setdefault(outcome, set()).add(key)
    return result


# --------------------------------------------------------------------------- the build


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _row_counts(directory: Path) -> dict[str, int]:
    return {
        str(p.relative_to(directory)): pq.ParquetFile(p).metadata.num_rows
        for p in sorted(directory.rglob("*.parquet"))
    }


def test_build_is_deterministic(built: Path, tmp_path: Path) -> None:
    """Fixed seed and derived part-file names: two builds are identical, byte for byte."""
    again = tmp_path / "again"
    demo.build_demo(again)
    assert demo.planted(again) == demo.planted(built)
    assert demo.planted_rows(again) == demo.planted_rows(built)
    assert demo.planted_final(again) == demo.planted_final(built)
    assert _row_counts(again) == _row_counts(built)
    assert _digest(again) == _digest(built)


def test_in_memory_key_matches_the_written_key(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """answer_key() with no directory equals the key written next to the data, also when
    computed afresh rather than remembered from a build."""
    monkeypatch.setattr(demo, "_ANSWER_CACHE", {})
    fresh = demo.answer_key()
    assert fresh == demo.answer_key(built)
    assert demo.planted(built) == fresh.keys
    assert demo.planted_rows(built) == fresh.rows
    assert demo.planted_final(built) == fresh.final
    assert demo.planted_summary(built) == fresh.summary
    assert demo.planted_schema_drift(built) == fresh.schema_drift


def test_answer_key_copies_are_independent(built: Path) -> None:
    """A caller changing its copy of the key must not change anyone else's."""
    for directory in (None, built):
        mine = demo.answer_key(directory)
        mine.keys["output"]["appeared"].clear()
        mine.summary["entered"] = 0
        assert demo.answer_key(directory).keys["output"]["appeared"]
        assert demo.answer_key(directory).summary["entered"] > 0


def test_rebuild_in_place_leaves_no_stale_parts(built: Path, tmp_path: Path) -> None:
    """A rebuild with another run id must not leave the old part files behind."""
    directory = tmp_path / "rebuilt"
    demo.build_demo(directory, run_id="first")
    demo.build_demo(directory, run_id="second")
    # part-file names embed the run id, so compare the multiset of row counts
    assert sorted(_row_counts(directory).values()) == sorted(_row_counts(built).values())
    assert yaml.safe_load((directory / "manifest.yaml").read_text())["run"]["id"] == "second"


def test_packaged_clients() -> None:
    """The demo reads only the packaged Parquet: 45,211 clients, client_id 100001.."""
    bank = demo.load_bank_clients()
    assert bank.num_rows == 45_211
    assert bank.column_names[0] == KEY and len(bank.column_names) == 18
    ids = bank[KEY].to_pylist()
    assert ids == list(range(100_001, 100_001 + 45_211))


def test_manifest_shape(built: Path, manifest: dict[str, Any]) -> None:
    """architecture.md "The run manifest": pipeline + run, paths relative to the manifest."""
    pipeline, run = manifest["pipeline"], manifest["run"]
    assert pipeline["key"] == [KEY] and pipeline["key_types"] == {KEY: "int64"}
    assert [s["name"] for s in pipeline["stages"]] == list(demo.STAGES)
    assert run["id"] == demo.DEFAULT_RUN_ID and run["rerun_of"] is None
    assert list(run["outputs"]) == list(demo.STAGES)
    assert {t["name"] for t in pipeline["traceability"]} == set(run["traceability"])
    for rel in (*run["outputs"].values(), *run["traceability"].values()):
        assert not Path(rel).is_absolute() and (built / rel).exists(), rel
        if rel.endswith("/"):
            assert (built / rel / "_SUCCESS").is_file()
            assert next((built / rel).rglob("part-*.parquet"), None) is not None


def test_hive_columns_live_only_in_folders(built: Path) -> None:
    """docs/semantics.md#keys: a column may live only in a hive partition folder."""
    for rel, column in (("offer_enrichment", "offer_family"), ("trace_main", "stage")):
        files = sorted((built / rel).glob(f"{column}=*/part-*.parquet"))
        assert files, rel
        for path in files:
            assert column not in pq.read_schema(path).names


# --------------------------------------------------------------------------- the claims


def test_every_planted_set_is_non_empty(built: Path) -> None:
    keys = demo.planted(built)
    assert set(keys) == set(demo.STAGES)
    for stage, outcomes in keys.items():
        for name, planted in outcomes.items():
            assert planted, f"{stage}/{name} is empty"
    for stage, flags in demo.planted_rows(built).items():
        assert all(n > 0 for n in flags.values()), stage
    assert all(demo.planted_final(built).values())


def test_small_plants_stay_small(built: Path) -> None:
    """Deliberate plants are a handful of clients; only the natural flows are large."""
    keys = demo.planted(built)
    deliberate = [
        keys[stage][name]
        for stage, name in [
            ("exclusions", "orphaned"),
            ("exclusions", "conflict"),
            ("exclusions", "phantom_drop"),
            ("offer_selection", "multiplied"),
            ("buffer_update", "multiplied"),
            ("buffer_selection", "collapsed"),
            ("output", "appeared"),
            ("output", "phantom_drop"),
        ]
    ]
    assert all(1 <= len(planted) <= 20 for planted in deliberate)
    # one deliberate anomaly per client, so each planted journey tells one story
    assert len(set().union(*deliberate)) == sum(len(planted) for planted in deliberate)
    # the parent/child reference join: a rarely held offer, a few hundred clients at most
    assert 20 < len(keys["offer_enrichment"]["multiplied"]) <= 300


def test_planted_outcomes_hold_and_are_complete(
    built: Path, tables: dict[str, list[tuple[int, int, int, int, str]]]
) -> None:
    """Each claimed key has exactly the claimed outcome at the claimed stage
    (outcome table, first match), and no other key has an unlisted anomaly there."""
    keys = demo.planted(built)
    for stage, rows in tables.items():
        computed = _by_outcome(rows)
        claimed = {k: v for k, v in keys[stage].items() if k != "grain_violation"}
        listed = {k: v for k, v in computed.items() if k not in UNLISTED}
        assert listed == claimed, stage


def test_entered_only_at_the_first_stage(
    built: Path, tables: dict[str, list[tuple[int, int, int, int, str]]]
) -> None:
    """docs/semantics.md#outcomes: at the first stage every key with out >= 1 is `entered`."""
    first = tables["selection"]
    assert {row[4] for row in first} == {"entered"}
    assert len(first) == demo.planted_summary(built)["entered"]


def test_multiplied_extra_rows(
    built: Path, tables: dict[str, list[tuple[int, int, int, int, str]]]
) -> None:
    """docs/semantics.md#outcomes: `multiplied` extra rows = out - in, summed per stage."""
    for stage, rows in tables.items():
        extra = sum(out - in_ for _k, in_, out, _d, o in rows if o == "multiplied")
        assert extra == demo.planted_rows(built)[stage].get("multiplied_extra_rows", 0), stage


def test_grain_violations(
    built: Path, con: duckdb.DuckDBPyConnection, stages: list[dict[str, Any]]
) -> None:
    """docs/semantics.md#stage-flags: `grain_violation` = distinct keys with more than one
    row sharing the same values on S's grain columns (every stage declaring a grain)."""
    keys = demo.planted(built)
    for stage in stages:
        if "grain" not in stage:
            continue
        cols = ", ".join(f'"{c}"' for c in stage["grain"])
        found = {
            k
            for (k,) in con.execute(
                f'SELECT DISTINCT {KEY} FROM "{stage["name"]}" WHERE {KEY} IS NOT NULL '
                f"GROUP BY {cols} HAVING count(*) > 1"
            ).fetchall()
        }
        assert found == keys[stage["name"]].get("grain_violation", set()), stage["name"]


def test_duplicate_rows(built: Path, con: duckdb.DuckDBPyConnection, manifest: dict) -> None:
    """docs/semantics.md#stage-flags: `duplicate_rows` = rows minus distinct rows of one
    dataset, hive partition columns included; traceability datasets have none."""
    rows = demo.planted_rows(built)
    for name in (*manifest["run"]["outputs"], *manifest["run"]["traceability"]):
        (dups,) = con.execute(
            f'SELECT (SELECT count(*) FROM "{name}") - '
            f'(SELECT count(*) FROM (SELECT DISTINCT * FROM "{name}"))'
        ).fetchone()
        assert dups == rows.get(name, {}).get("duplicate_rows", 0), name


def test_null_keys(built: Path, con: duckdb.DuckDBPyConnection, manifest: dict) -> None:
    """docs/semantics.md#keys: null-key rows of a stage's output plus those of the
    traceability rows attributed to the stage are counted, never silently dropped."""
    rows = demo.planted_rows(built)
    for name in manifest["run"]["outputs"]:
        (n,) = con.execute(
            f'SELECT (SELECT count(*) FROM "{name}" WHERE {KEY} IS NULL) + '
            "(SELECT count(*) FROM drops WHERE stage = $s AND k IS NULL)",
            {"s": name},
        ).fetchone()
        assert n == rows[name].get("null_key", 0), name


def test_schema_drift(built: Path, con: duckdb.DuckDBPyConnection, stages: list) -> None:
    """docs/semantics.md#stage-flags: schema drift = columns in a parent's output missing
    in S's (hive folder columns count as columns)."""
    drift = demo.planted_schema_drift(built)

    def columns(name: str) -> list[str]:
        return [row[0] for row in con.execute(f'DESCRIBE SELECT * FROM "{name}"').fetchall()]

    for parent, stage in itertools.pairwise(stages):
        missing = [c for c in columns(parent["name"]) if c not in columns(stage["name"])]
        assert missing == drift.get(stage["name"], []), stage["name"]
        assert KEY in columns(stage["name"])
        for column in stage.get("grain", []):
            assert column in columns(stage["name"]), (stage["name"], column)


def test_final_outcomes(
    built: Path,
    stages: list[dict[str, Any]],
    tables: dict[str, list[tuple[int, int, int, int, str]]],
) -> None:
    """docs/semantics.md#journeys: `targeted` if in a final output, else
    the outcome of the last stage with in >= 1 and out = 0, else `never_entered`."""
    final_stage = stages[-1]["name"]
    targeted = {k for k, _i, out, _d, _o in tables[final_stage] if out >= 1}
    last_exit: dict[int, str] = {}
    seen: set[int] = set()
    for stage in stages:  # pipeline order: later stages overwrite earlier exits
        for key, in_, out, _drop, outcome in tables[stage["name"]]:
            seen.add(key)
            if in_ >= 1 and out == 0:
                last_exit[key] = outcome
    final: dict[str, set[int]] = {}
    for key in seen - targeted:
        final.setdefault(last_exit.get(key, "never_entered"), set()).add(key)
    assert final == demo.planted_final(built)
    assert len(targeted) == demo.planted_summary(built)["targeted"]
    # never_entered keys have only phantom drops in their journey
    only_phantoms = Counter(
        o for rows in tables.values() for k, *_rest, o in rows if k in final["never_entered"]
    )
    assert set(only_phantoms) == {"phantom_drop"}


def test_reconciliation_counts(
    built: Path, con: duckdb.DuckDBPyConnection, tables: dict[str, list]
) -> None:
    """docs/semantics.md#reconciliation: gap = entered - targeted - traced,
    reporting_gap with reported sources only; residual from the final outcomes."""
    summary = demo.planted_summary(built)
    first, last = demo.STAGES[0], demo.STAGES[-1]
    (entered, targeted, traced, reported) = con.execute(
        f'SELECT (SELECT count(DISTINCT {KEY}) FROM "{first}"), '
        f'(SELECT count(DISTINCT {KEY}) FROM "{last}"), '
        "(SELECT count(DISTINCT k) FROM drops), "
        "(SELECT count(DISTINCT k) FROM drops WHERE reported)"
    ).fetchone()
    final = demo.planted_final(built)
    left = sum(len(final[o]) for o in ("dropped", "dropped_unreported", "orphaned"))
    assert summary == {
        "entered": entered,
        "targeted": targeted,
        "traced": traced,
        "traced_reported": reported,
        "gap": entered - targeted - traced,
        "reporting_gap": entered - targeted - reported,
        "residual": entered - targeted - left,
    }
