"""Stage-level flags and keys (docs/semantics.md#keys and #stage-flags)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from tests.pipelines import RunBuilder
from tracer.manifest import load_manifest
from tracer.store import ingest_manifest


def stage(report: dict, name: str) -> dict:
    return next(s for s in report["stages"] if s["stage"] == name)


def test_null_key_rows_are_counted_per_stage_never_dropped(build: RunBuilder) -> None:
    # "A row whose lineage key is null — any component null, or a string component empty
    # after trimming — is a null_key row ... output and traceability, separately and as a total."
    schema = pa.schema([("client_id", pa.string()), ("v", pa.int64())])
    a = [{"client_id": "A", "v": 1}, {"client_id": "B", "v": 2}, {"client_id": None, "v": 3}]
    b = [{"client_id": " A ", "v": 1}, {"client_id": "  ", "v": 4}, {"client_id": "", "v": 5}]
    trace_rows = [{"client_id": "B", "reason": "r"}, {"client_id": None, "reason": "r"}]
    trace_schema = pa.schema([("client_id", pa.string()), ("reason", pa.string())])
    run = build.run(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": a, "b": b},
        trace={"t": ({"reported": True, "stage": "b", "reason_column": "reason"}, trace_rows)},
        schemas={"a": schema, "b": schema, "t": trace_schema},
    )
    report = build.report(run)
    assert stage(report, "a")["flags"]["null_key"] == {"output": 1, "traceability": 0, "total": 1}
    assert stage(report, "b")["flags"]["null_key"] == {"output": 2, "traceability": 1, "total": 3}
    # Trimming: " A " is the key "A", so A passed.
    assert build.outcome(run, "b", "A") == "passed"
    assert report["totals"]["null_key_rows"] == 4
    assert report["totals"]["reconciles"] is False


def test_duplicate_rows_count_rows_identical_in_every_column(build: RunBuilder) -> None:
    # duplicate_rows: rows minus distinct rows of one dataset, every column compared.
    a = [{"client_id": i, "offer": "x"} for i in (1, 2, 3)]
    b = [
        {"client_id": 1, "offer": "x"},
        {"client_id": 1, "offer": "x"},
        {"client_id": 1, "offer": "x"},
        {"client_id": 2, "offer": "x"},
        {"client_id": 2, "offer": "y"},  # same key, different row: not a duplicate
        {"client_id": 3, "offer": "x"},
    ]
    run = build.run(stages=[{"name": "a"}, {"name": "b"}], outputs={"a": a, "b": b})
    assert stage(build.report(run), "b")["flags"]["duplicate_rows"] == 2


def test_a_part_file_without_a_column_reads_it_as_null(build: RunBuilder) -> None:
    # Spark leaves part files of one folder with other columns when a writer's schema
    # evolved: a column some parts lack is null in their rows, as pyarrow reads it, and the
    # duplicate count compares it too (docs/semantics.md#stage-flags: duplicate_rows, rows
    # identical in every column).
    b = [{"client_id": 1, "offer": "x"}, {"client_id": 1, "offer": "x"},
         {"client_id": 2, "offer": "y"}, {"client_id": 3, "offer": "z"}]  # fmt: skip
    manifest = build.manifest(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": [{"client_id": i} for i in (1, 2, 3)], "b": b},
        spark={"b": []},
    )
    parts = sorted((manifest.parent / "b").glob("part-*.parquet"))
    assert len(parts) == 2  # rows 1, 1 | 2, 3
    # The second part without `offer`, and client 2 twice there: null offers, identical.
    pq.write_table(pa.table({"client_id": [2, 2, 3]}), parts[1])
    run = ingest_manifest(build.engine, load_manifest(manifest))
    assert build.journey(run, 2)["stages"][1]["rows_out"] == 2
    assert stage(build.report(run), "b")["flags"]["duplicate_rows"] == 2  # 1 twice, 2 twice


def test_a_glob_character_in_a_folder_name_is_that_character(build: RunBuilder) -> None:
    # A manifest's glob matches folders `a*b` and `aXb`; each file is read once, by its
    # own name, though `a*b` as a pattern would match `aXb` too. Read twice, 2 would be
    # `multiplied` at b (docs/semantics.md#outcomes); 3, in no file of b, is `orphaned`.
    manifest = build.manifest(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": [{"client_id": i} for i in (1, 2, 3)], "b": [{"client_id": 1}]},
    )
    for folder, ids in (("a*b", [1]), ("aXb", [2])):
        (manifest.parent / "parts" / folder).mkdir(parents=True)
        part = manifest.parent / "parts" / folder / "p.parquet"
        pq.write_table(pa.table({"client_id": ids}), part)
    document = json.loads(manifest.read_text())
    document["run"]["outputs"]["b"] = "parts/a*/p.parquet"
    manifest.write_text(json.dumps(document))
    run = ingest_manifest(build.engine, load_manifest(manifest))
    assert [s["rows_out"] for s in build.journey(run, 1)["stages"]] == [1, 1]
    assert [s["rows_out"] for s in build.journey(run, 2)["stages"]] == [1, 1]
    assert build.outcome(run, "b", 3) == "orphaned"


def test_grain_violation_counts_keys_with_rows_sharing_grain_values(build: RunBuilder) -> None:
    # grain_violation: distinct keys with more than one row sharing the same grain values.
    a = [{"client_id": i, "offer": "x", "n": 0} for i in (1, 2, 3)]
    b = [
        {"client_id": 1, "offer": "x", "n": 1},
        {"client_id": 1, "offer": "x", "n": 2},  # same grain (client_id, offer): violation
        {"client_id": 2, "offer": "x", "n": 1},
        {"client_id": 2, "offer": "y", "n": 1},  # distinct grain: fine
        {"client_id": 3, "offer": "x", "n": 1},
    ]
    run = build.run(
        stages=[{"name": "a"}, {"name": "b", "grain": ["client_id", "offer"]}],
        outputs={"a": a, "b": b},
    )
    report = build.report(run)
    assert stage(report, "b")["flags"]["grain_violation"] == 1
    assert stage(report, "b")["flags"]["duplicate_rows"] == 0
    assert {"stage": "b", "anomaly": "grain_violation"} in build.journey(run, 1)["anomalies"]
    assert {"stage": "b", "anomaly": "grain_violation"} not in build.journey(run, 2)["anomalies"]


def test_dropped_identifier_column_shows_as_drift_duplicates_and_grain_violation(
    build: RunBuilder,
) -> None:
    # The fourth root cause: a transformation drops identifier columns, distinct rows look
    # identical. "a grain column missing from S's output is left out of that comparison and
    # reported in schema drift", key and grain columns called out first.
    a = [{"client_id": 1, "offer": o, "score": 5, "note": "n"} for o in ("x", "y")]
    b = [{"client_id": 1, "score": 5}, {"client_id": 1, "score": 5}]
    run = build.run(
        stages=[
            {"name": "a", "grain": ["client_id", "offer"]},
            {"name": "b", "grain": ["client_id", "offer"]},
        ],
        outputs={"a": a, "b": b},
    )
    flags = stage(build.report(run), "b")["flags"]
    assert flags["dropped_columns"] == [
        {"column": "offer", "parent": "a", "role": "grain"},
        {"column": "note", "parent": "a", "role": "column"},
    ]
    assert flags["duplicate_rows"] == 1
    assert flags["grain_violation"] == 1
    assert build.outcome(run, "b", 1) == "passed"  # 2 rows in, 2 rows out


def test_composite_keys_with_a_mapped_traceability_column(build: RunBuilder) -> None:
    # "it may be composite, e.g. (country, client_no) ... the column names may differ per
    # dataset: a mapping is allowed."
    a = [{"branch": b, "client_no": n} for b in ("LIS", "OPO") for n in (1, 2)]
    b = [r for r in a if r != {"branch": "OPO", "client_no": 1}]
    trace = [{"br": "OPO", "cno": 1, "why": "excluded"}]
    run = build.run(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": a, "b": b},
        trace={
            "t": (
                {
                    "reported": True,
                    "stage": "b",
                    "reason_column": "why",
                    "columns": {"branch": "br", "client_no": "cno"},
                },
                trace,
            )
        },
        key=["branch", "client_no"],
    )
    journey = build.journey(run, "OPO", 1)
    assert journey["key"] == {"branch": "OPO", "client_no": 1}
    assert journey["final_outcome"] == "dropped"
    assert build.outcome(run, "b", "LIS", 1) == "passed"
    # (LIS, 1) and (OPO, 1) share client_no but are different keys.
    assert build.report(run)["totals"]["entered"] == 4


def test_integer_and_string_keys_are_one_key_only_when_declared_string(build: RunBuilder) -> None:
    # "an integer 42 and the string "42" are the same key only if the pipeline says the key
    # is a string"
    a = [{"client_id": 42}]
    b = [{"client_id": "42"}]
    schemas = {"b": pa.schema([("client_id", pa.string())])}
    run = build.run(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": a, "b": b},
        key_types={"client_id": "string"},
        schemas=schemas,
    )
    assert build.outcome(run, "b", "42") == "passed"


REPORTED_BY_COLUMN = {"reported": True, "stage_column": "stage", "reason_column": "reason"}


def test_an_int64_key_matches_across_integer_and_text_columns(build: RunBuilder) -> None:
    # docs/semantics.md#keys: "strings trimmed; 42 and "42" are one key only if the pipeline
    # says the key is a string": under an int64 key, " 42" in a text column is the integer
    # 42. Ingestion keeps an integer column's keys as integers and a text column's as their
    # canonical text; a stage and the traces of either kind are read together.
    a = [{"client_id": " 42"}, {"client_id": "7 "}, {"client_id": "0042"}, {"client_id": "8"}]
    b = [{"client_id": 42}]
    trace = [{"client_id": "7", "stage": "b", "reason": "opted out"}]
    blocked = [{"client_id": 8, "reason": "blocked"}]  # an integer column
    run = build.run(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": a, "b": b},
        trace={
            "t": (REPORTED_BY_COLUMN, trace),
            "ops": ({"reported": False, "stage": "b", "reason_column": "reason"}, blocked),
        },
        key_types={"client_id": "int64"},
        schemas={
            "a": pa.schema([("client_id", pa.string())]),
            "t": pa.schema(
                [("client_id", pa.string()), ("stage", pa.string()), ("reason", pa.string())]
            ),
        },
    )
    # 42 twice at a (" 42" and "0042"), once at b, nothing logged: collapsed.
    forty_two = build.journey(run, 42)
    assert [(s["stage"], s["rows_out"]) for s in forty_two["stages"]] == [("a", 2), ("b", 1)]
    assert build.outcome(run, "b", 42) == "collapsed"
    seven = build.journey(run, 7)
    assert seven["final_outcome"] == "dropped"
    assert seven["stages"][1]["reasons"][0]["reason"] == "opted out"
    assert build.outcome(run, "b", 8) == "dropped_unreported"
    assert build.report(run)["totals"]["entered"] == 3


def test_key_in_a_hive_partition_folder_of_a_spark_directory(build: RunBuilder) -> None:
    # "A key column may live only in a hive partition folder (branch=LIS/): it is still a column."
    a = [{"branch": b, "client_no": n, "v": 1} for b in ("LIS", "OPO") for n in (1, 2, 3)]
    b = [r for r in a if (r["branch"], r["client_no"]) != ("LIS", 3)]
    run = build.run(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": a, "b": b},
        key=["branch", "client_no"],
        spark={"a": ["branch"], "b": ["branch"]},
    )
    report = build.report(run)
    assert stage(report, "a")["outcomes"]["entered"] == 6
    assert build.outcome(run, "b", "LIS", 3) == "orphaned"
    assert build.outcome(run, "b", "OPO", 3) == "passed"


def test_stage_column_in_a_hive_partition_of_the_traceability_source(build: RunBuilder) -> None:
    a = [{"client_id": i} for i in range(1, 5)]
    trace = [
        {"client_id": 2, "stage": "b", "reason": "x"},
        {"client_id": 3, "stage": "c", "reason": "y"},
    ]
    run = build.run(
        stages=[{"name": "a"}, {"name": "b"}, {"name": "c"}],
        outputs={"a": a, "b": [r for r in a if r["client_id"] != 2], "c": a[:1] + a[3:]},
        trace={
            "t": ({"reported": True, "stage_column": "stage", "reason_column": "reason"}, trace)
        },
        spark={"t": ["stage"], "a": []},
    )
    assert build.outcome(run, "b", 2) == "dropped"
    assert build.outcome(run, "c", 3) == "dropped"
    assert build.journey(run, 3)["stages"][-1]["reasons"][0]["reason"] == "y"
