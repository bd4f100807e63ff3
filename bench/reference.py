"""Per-stage outcome counts straight from a run's Parquet files, twice, independently of tracer.

These are the numbers an engineer would get at a notebook, and what tracer's
classification must reproduce. Both implement the outcome table of
docs/semantics.md (first matching row wins) for a linear pipeline:

* ``duckdb_counts``: DuckDB SQL over ``read_parquet``: rows per key per dataset,
  then per stage a FULL JOIN of parent, stage and drops and a CASE;
* ``pandas_counts``: pandas reads, ``groupby`` sizes and outer ``merge``s.

They share only the manifest reading (which files, which columns), not the
counting, so a bug in one formulation shows up as a disagreement.

Result shape: ``{stage: {outcome: distinct keys}}``, stages in pipeline order,
every outcome present (0 where none). Null-key rows never get an outcome.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

OUTCOMES: tuple[str, ...] = (
    "entered",
    "passed",
    "expanded",
    "multiplied",
    "collapsed",
    "dropped",
    "dropped_unreported",
    "partially_dropped",
    "orphaned",
    "conflict",
    "appeared",
    "phantom_drop",
)
Counts = dict[str, dict[str, int]]


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class StageFiles:
    name: str
    path: str  # absolute file, directory or glob
    files: tuple[str, ...]
    key: tuple[str, ...]  # key columns as named in this dataset
    grain_extra: tuple[str, ...]  # grain columns beyond the key, present in the data
    fanout_expected: bool


@dataclass(frozen=True)
class TraceFiles:
    name: str
    path: str
    files: tuple[str, ...]
    key: tuple[str, ...]
    reported: bool
    stage: str | None  # a fixed stage ...
    stage_column: str | None  # ... or the column naming it


@dataclass(frozen=True)
class RunFiles:
    key_types: tuple[str, ...]  # "int64" or "string" per key component
    stages: tuple[StageFiles, ...]
    traces: tuple[TraceFiles, ...]


def manifest_path(manifest_dir: str | os.PathLike[str]) -> Path:
    """Accept the run folder (holding manifest.yaml) or the manifest file itself."""
    path = Path(manifest_dir)
    return path / "manifest.yaml" if path.is_dir() else path


def parquet_files(path: str) -> tuple[str, ...]:
    """The data files behind a file, a Spark-style directory or a glob (skips _SUCCESS, .crc)."""
    if any(ch in path for ch in "*?["):
        found = glob.glob(path, recursive=True)
    elif os.path.isdir(path):
        found = glob.glob(os.path.join(path, "**", "*"), recursive=True)
    else:
        found = [path]
    files = sorted(
        f for f in found if os.path.isfile(f) and not os.path.basename(f).startswith(("_", "."))
    )
    if not files:
        raise FileNotFoundError(f"no Parquet file at {path}")
    return tuple(files)


def read_manifest(manifest_dir: str | os.PathLike[str]) -> RunFiles:
    """The files and columns the counts need; refuses pipelines that are not linear."""
    path = manifest_path(manifest_dir)
    spec = yaml.safe_load(path.read_text())
    base = path.resolve().parent
    pipeline, run = spec["pipeline"], spec["run"]
    key = [pipeline["key"]] if isinstance(pipeline["key"], str) else list(pipeline["key"])

    def resolve(p: str) -> str:
        return p if os.path.isabs(p) else str(base / p)

    stages: list[StageFiles] = []
    previous: str | None = None
    for s in pipeline["stages"]:
        parents = s.get("parents")
        parents = [parents] if isinstance(parents, str) else parents
        if parents is not None and parents != ([previous] if previous else []):
            raise NotImplementedError(f"stage {s['name']}: only linear pipelines are supported")
        mapping = s.get("columns") or {}
        names = [mapping.get(c, c) for c in key]
        grain = s.get("grain") or key
        grain = [grain] if isinstance(grain, str) else grain
        target = resolve(run["outputs"][s["name"]])
        files = parquet_files(target)
        present = set(pq.read_schema(files[0]).names) | _hive_columns(files, target)
        extra = tuple(mapping.get(c, c) for c in grain if c not in key)
        stages.append(
            StageFiles(
                name=s["name"],
                path=target,
                files=files,
                key=tuple(names),
                # A grain column missing from the output is left out of the comparison.
                grain_extra=tuple(c for c in extra if c in present),
                fanout_expected=s.get("fanout") == "expected",
            )
        )
        previous = s["name"]
    traces: list[TraceFiles] = []
    for t in pipeline.get("traceability") or []:
        if t["name"] not in (run.get("traceability") or {}):
            continue
        mapping = t.get("columns") or {}
        target = resolve(run["traceability"][t["name"]])
        traces.append(
            TraceFiles(
                name=t["name"],
                path=target,
                files=parquet_files(target),
                key=tuple(mapping.get(c, c) for c in key),
                reported=bool(t["reported"]),
                stage=t.get("stage"),
                stage_column=t.get("stage_column"),
            )
        )
    declared = pipeline.get("key_types") or {}
    key_types = tuple(
        declared.get(c) or _infer_key_type(stages[0].files[0], stages[0].key[i])
        for i, c in enumerate(key)
    )
    return RunFiles(key_types, tuple(stages), tuple(traces))


def _hive_columns(files: tuple[str, ...], root: str) -> set[str]:
    """`key=value` folder names between the dataset root and its files."""
    if not os.path.isdir(root):
        return set()
    rel = os.path.relpath(os.path.dirname(files[0]), root)
    return {part.split("=", 1)[0] for part in Path(rel).parts if "=" in part}


def _infer_key_type(file: str, column: str) -> str:
    import pyarrow as pa

    schema = pq.read_schema(file)
    if column in schema.names and pa.types.is_integer(schema.field(column).type):
        return "int64"
    return "string"


def dataset_rows(manifest_dir: str | os.PathLike[str]) -> dict[str, int]:
    """Row counts per dataset from the Parquet footers (for rows/s), stage outputs first."""
    run = read_manifest(manifest_dir)
    return {
        d.name: sum(pq.ParquetFile(f).metadata.num_rows for f in d.files)
        for d in (*run.stages, *run.traces)
    }


def empty_counts(stages: list[str] | tuple[str, ...]) -> Counts:
    return {s: dict.fromkeys(OUTCOMES, 0) for s in stages}


# --------------------------------------------------------------------------- DuckDB


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duck_scan(files: tuple[str, ...]) -> str:
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return f"read_parquet([{listed}], hive_partitioning = true, union_by_name = true)"


def _duck_key(column: str, key_type: str, is_integer: bool) -> str:
    """Key component normalised as docs/semantics.md says; NULL marks a null-key row."""
    if key_type == "int64":
        if is_integer:
            return _q(column)
        return f"CAST(NULLIF(trim(CAST({_q(column)} AS VARCHAR)), '') AS BIGINT)"
    return f"NULLIF(trim(CAST({_q(column)} AS VARCHAR)), '')"


# First matching row wins, exactly as the table in docs/semantics.md is ordered.
_DUCK_CASE = """
CASE
  WHEN i >= 1 AND o = i AND d = 0 THEN 'passed'
  WHEN i >= 1 AND o > i AND d = 0 AND {fanout} AND nd = o THEN 'expanded'
  WHEN i >= 1 AND o > i THEN 'multiplied'
  WHEN i >= 2 AND o >= 1 AND o < i AND d = 0 THEN 'collapsed'
  WHEN i >= 1 AND o = 0 AND rep >= 1 THEN 'dropped'
  WHEN i >= 1 AND o = 0 AND rep = 0 AND ops >= 1 THEN 'dropped_unreported'
  WHEN i >= 2 AND o >= 1 AND o < i AND o + d = i THEN 'partially_dropped'
  WHEN i >= 1 AND o = 0 AND d = 0 THEN 'orphaned'
  WHEN o >= 1 AND d >= 1 THEN 'conflict'
  WHEN i = 0 AND o >= 1 THEN 'appeared'
  WHEN i = 0 AND o = 0 AND d >= 1 THEN 'phantom_drop'
END"""


def duckdb_counts(manifest_dir: str | os.PathLike[str], threads: int | None = None) -> Counts:
    """Outcome counts per stage computed by DuckDB over the Parquet files (stores nothing)."""
    run = read_manifest(manifest_dir)
    con = duckdb.connect(config={"threads": threads} if threads else {})
    try:
        return _duckdb_counts(con, run)
    finally:
        con.close()


def _duckdb_counts(con: duckdb.DuckDBPyConnection, run: RunFiles) -> Counts:
    n_key = len(run.key_types)
    k = [f"k{j}" for j in range(n_key)]
    keys = ", ".join(k)
    not_null = " AND ".join(f"{c} IS NOT NULL" for c in k)

    def key_select(files: tuple[str, ...], columns: tuple[str, ...]) -> str:
        schema = pq.read_schema(files[0])
        parts = []
        for j, (column, key_type) in enumerate(zip(columns, run.key_types, strict=True)):
            integer = column in schema.names and str(schema.field(column).type).startswith(
                ("int", "uint")
            )
            parts.append(f"{_duck_key(column, key_type, integer)} AS k{j}")
        return ", ".join(parts)

    for i, st in enumerate(run.stages):
        scan = f"SELECT {key_select(st.files, st.key)}"
        scan += "".join(f", {_q(c)}" for c in st.grain_extra)
        scan += f" FROM {_duck_scan(st.files)}"
        if st.fanout_expected:
            # Rows per (key, grain) first: nd = distinct grain values of the key's rows
            # (NULL counts as one value, as in GROUP BY). Faster than count(DISTINCT row(...)).
            grain = ", ".join([*k, *(_q(c) for c in st.grain_extra)])
            body = f"""
                SELECT {keys}, sum(c) AS n, count(*) AS nd
                FROM (SELECT {grain}, count(*) AS c FROM ({scan}) WHERE {not_null} GROUP BY {grain})
                GROUP BY {keys}"""
        else:
            body = f"""
                SELECT {keys}, count(*) AS n, 0 AS nd
                FROM ({scan}) WHERE {not_null} GROUP BY {keys}"""
        con.execute(f"CREATE TEMP TABLE out_{i} AS {body}")

    selects = []
    for t in run.traces:
        stage = (
            f"CAST({_q(t.stage_column)} AS VARCHAR)"
            if t.stage_column
            else "'" + str(t.stage).replace("'", "''") + "'"
        )
        rep, ops = (1, 0) if t.reported else (0, 1)
        selects.append(
            f"SELECT {stage} AS stage, {key_select(t.files, t.key)}, {rep} AS rep, {ops} AS ops "
            f"FROM {_duck_scan(t.files)}"
        )
    if not selects:
        selects.append(
            f"SELECT NULL::VARCHAR AS stage, {', '.join('NULL AS ' + c for c in k)}, 0, 0"
        )
    con.execute(
        f"""
        CREATE TEMP TABLE drops AS
        SELECT stage, {keys}, sum(rep) AS rep, sum(ops) AS ops
        FROM ({" UNION ALL ".join(selects)})
        WHERE stage IS NOT NULL AND {not_null}
        GROUP BY stage, {keys}
        """
    )

    counts = empty_counts([s.name for s in run.stages])
    for i, st in enumerate(run.stages):
        # Keys in the parent's output, the stage's output or its traceability rows.
        parent = f"out_{i - 1}" if i > 0 else f"(SELECT {keys}, 0 AS n FROM out_0 WHERE FALSE)"
        if i == 0:
            # No parent: rows enter the run; a trace row alone is still a phantom drop.
            case = "CASE WHEN o >= 1 THEN 'entered' WHEN d >= 1 THEN 'phantom_drop' END"
        else:
            case = _DUCK_CASE.format(fanout="TRUE" if st.fanout_expected else "FALSE")
        rows = con.execute(
            f"""
            WITH per_key AS (
                SELECT coalesce(p.n, 0) AS i, coalesce(s.n, 0) AS o, coalesce(s.nd, 0) AS nd,
                       coalesce(d.rep, 0) AS rep, coalesce(d.ops, 0) AS ops,
                       coalesce(d.rep, 0) + coalesce(d.ops, 0) AS d
                FROM {parent} AS p
                FULL JOIN out_{i} AS s USING ({keys})
                FULL JOIN (SELECT * FROM drops WHERE stage = $stage) AS d USING ({keys})
            )
            SELECT {case} AS outcome, count(*) FROM per_key GROUP BY outcome
            """,
            {"stage": st.name},
        ).fetchall()
        for outcome, n in rows:
            if outcome is None:
                raise AssertionError(f"{st.name}: {n} keys matched no row of the outcome table")
            counts[st.name][outcome] = int(n)
    return counts


# --------------------------------------------------------------------------- pandas


def _pd_read(files: tuple[str, ...], path: str, columns: list[str]) -> pd.DataFrame:
    source = path if os.path.isdir(path) else list(files)
    if isinstance(source, list) and len(source) == 1:
        source = source[0]
    if isinstance(source, list):
        return pd.concat(
            [pd.read_parquet(f, columns=columns, dtype_backend="numpy_nullable") for f in source],
            ignore_index=True,
        )
    return pd.read_parquet(source, columns=columns, dtype_backend="numpy_nullable")


def _pd_keys(
    df: pd.DataFrame, columns: tuple[str, ...], key_types: tuple[str, ...]
) -> pd.DataFrame:
    """Rename key columns to k0.., normalise them and drop the null-key rows."""
    out = df.rename(columns={c: f"k{j}" for j, c in enumerate(columns)})
    for j, key_type in enumerate(key_types):
        col = out[f"k{j}"]
        if isinstance(col.dtype, pd.CategoricalDtype):  # hive partition column
            col = col.astype(object)
        if key_type == "string" or not pd.api.types.is_integer_dtype(col.dtype):
            text = col.astype("string").str.strip().replace("", pd.NA)
            col = text if key_type == "string" else pd.to_numeric(text).astype("Int64")
        out[f"k{j}"] = col
    return out.dropna(subset=[f"k{j}" for j in range(len(key_types))])


def pandas_counts(manifest_dir: str | os.PathLike[str]) -> Counts:
    """Outcome counts per stage computed with pandas groupbys and outer merges."""
    run = read_manifest(manifest_dir)
    k = [f"k{j}" for j in range(len(run.key_types))]

    outs: list[pd.DataFrame] = []
    for st in run.stages:
        df = _pd_keys(
            _pd_read(st.files, st.path, [*st.key, *st.grain_extra]), st.key, run.key_types
        )
        per_key = df.groupby(k).size().rename("out").reset_index()
        if st.fanout_expected:
            grain = [*k, *st.grain_extra]
            distinct = df.drop_duplicates(subset=grain).groupby(k).size().rename("distinct")
            per_key = per_key.merge(distinct.reset_index(), on=k, how="left")
        outs.append(per_key)

    frames = []
    for t in run.traces:
        cols = [*t.key, *([t.stage_column] if t.stage_column else [])]
        df = _pd_keys(_pd_read(t.files, t.path, cols), t.key, run.key_types)
        df = (
            df.rename(columns={t.stage_column: "stage"})
            if t.stage_column
            else df.assign(stage=t.stage)
        )
        df = df.dropna(subset=["stage"])
        df["stage"] = df["stage"].astype(str)
        df["rep"] = int(t.reported)
        df["ops"] = 1 - int(t.reported)
        frames.append(df[["stage", *k, "rep", "ops"]])
    drops = (
        pd.concat(frames, ignore_index=True)
        .groupby(["stage", *k])[["rep", "ops"]]
        .sum()
        .reset_index()
        if frames
        else pd.DataFrame(columns=["stage", *k, "rep", "ops"])
    )

    counts = empty_counts([s.name for s in run.stages])
    for i, st in enumerate(run.stages):
        here = drops[drops["stage"] == st.name].drop(columns="stage")
        frame = outs[i].merge(here, on=k, how="outer")
        if i > 0:
            parent = outs[i - 1][[*k, "out"]].rename(columns={"out": "in"})
            frame = frame.merge(parent, on=k, how="outer")
        else:
            frame["in"] = 0
        frame = frame.fillna(0)
        counts[st.name].update(_pd_classify(frame, first=i == 0, fanout=st.fanout_expected))
    return counts


def _pd_classify(frame: pd.DataFrame, first: bool, fanout: bool) -> dict[str, int]:
    i = frame["in"].to_numpy(np.int64)
    o = frame["out"].to_numpy(np.int64)
    rep = frame["rep"].to_numpy(np.int64)
    ops = frame["ops"].to_numpy(np.int64)
    d = rep + ops
    if first:
        labels = np.where(o >= 1, "entered", np.where(d >= 1, "phantom_drop", ""))
    else:
        nd = frame["distinct"].to_numpy(np.int64) if fanout else np.zeros(len(frame), np.int64)
        shrunk = (o >= 1) & (o < i)
        table = [  # (outcome, condition): first match wins
            ("passed", (i >= 1) & (o == i) & (d == 0)),
            ("expanded", (i >= 1) & (o > i) & (d == 0) & fanout & (nd == o)),
            ("multiplied", (i >= 1) & (o > i)),
            ("collapsed", (i >= 2) & shrunk & (d == 0)),
            ("dropped", (i >= 1) & (o == 0) & (rep >= 1)),
            ("dropped_unreported", (i >= 1) & (o == 0) & (rep == 0) & (ops >= 1)),
            ("partially_dropped", (i >= 2) & shrunk & (o + d == i)),
            ("orphaned", (i >= 1) & (o == 0) & (d == 0)),
            ("conflict", (o >= 1) & (d >= 1)),
            ("appeared", (i == 0) & (o >= 1)),
            ("phantom_drop", (i == 0) & (o == 0) & (d >= 1)),
        ]
        labels = np.select([c for _, c in table], [name for name, _ in table], default="")
    found = pd.Series(labels).value_counts()
    if "" in found.index:
        raise AssertionError(f"{int(found[''])} keys matched no row of the outcome table")
    return {str(name): int(n) for name, n in found.items()}


# --------------------------------------------------------------------------- comparing


def diff_counts(named: dict[str, Counts]) -> list[dict[str, Any]]:
    """Every (stage, outcome) where the implementations disagree, with each one's number."""
    names = list(named)
    stages = list(dict.fromkeys(s for counts in named.values() for s in counts))
    mismatches = []
    for stage in stages:
        for outcome in OUTCOMES:
            values = {n: named[n].get(stage, {}).get(outcome) for n in names}
            if len(set(values.values())) > 1:
                mismatches.append({"stage": stage, "outcome": outcome, **values})
    return mismatches


def main(argv: list[str] | None = None) -> int:
    """`python bench/reference.py RUN_DIR`: both counts side by side, for a quick look."""
    import argparse
    import json
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    duck = duckdb_counts(args.run_dir)
    middle = time.perf_counter()
    pand = pandas_counts(args.run_dir)
    done = time.perf_counter()
    print(json.dumps(duck, indent=1))
    print(f"duckdb {middle - started:.2f} s, pandas {done - middle:.2f} s")
    mismatches = diff_counts({"duckdb": duck, "pandas": pand})
    print("agree" if not mismatches else json.dumps(mismatches, indent=1))
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
