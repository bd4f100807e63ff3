"""A run stores each thing once: the anomaly list's large groups are read from the per-key
table instead of a second copy, and one key index serves every lookup by key.

The answers must not depend on where a group is stored: the same run classified with
every group stored and with every group left to `key_outcomes` lists the same items,
page by page. The contract is docs/semantics.md: the anomaly list (#outcomes: every
(S, k) whose outcome is neither `entered` nor `passed`, and every grain violation, with
rows in, out, dropped and extra rows), gap-cell keys in cause order (#causes), and the
cells of a comparison (#comparing-runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, text

from tests.pipelines import RunBuilder
from tracer import chunks as chunk_files
from tracer import classify, db
from tracer.manifest import parse_manifest
from tracer.outcomes import UNREMARKABLE, Outcome
from tracer.queries.anomalies import anomalies, gap_keys
from tracer.queries.compare import compare, compare_keys
from tracer.store import classify_step, ingest_manifest, ingest_step, submit_run

REPORTED = {"reported": True, "stage_column": "stage", "reason_column": "reason"}
OPERATIONAL = {"reported": False, "stage": "c", "reason_column": "reason"}


def _offers(client: int, *offers: int) -> list[dict[str, int]]:
    return [{"client_id": client, "offer_id": o} for o in offers]


def varied(build: RunBuilder, run_id: str) -> str:
    """Every kind of anomaly-list group, several keys each, across four stages."""
    a = [{"client_id": i, "offer_id": 0} for i in range(1, 41)]
    b = [r for i in range(1, 41) if i not in (3, 4, 5) for r in _offers(i, 1, 2)[: 1 + i % 2]]
    b += _offers(50, 1)  # appeared
    b += _offers(6, 9)  # 6: one offer twice -> multiplied (not distinct on the grain)
    c = [r for r in b if r["client_id"] not in (7, 8, 9)]  # 7, 8 dropped operational; 9 orphaned
    d = [{"client_id": r["client_id"]} for r in c if r["client_id"] != 10]  # 10 dropped
    d += [{"client_id": 11}]  # 11: a second row, no drop -> multiplied, grain violation
    trace = [{"client_id": i, "stage": "b", "reason": "excluded"} for i in (3, 4)]
    trace += [{"client_id": 10, "stage": "d", "reason": "late"}]
    trace += [{"client_id": 12, "stage": "d", "reason": "both"}]  # conflict
    trace += [{"client_id": 60, "stage": "c", "reason": "ghost"}]  # phantom
    return build.run(
        stages=[
            {"name": "a"},
            {"name": "b", "grain": ["client_id", "offer_id"], "fanout": "expected"},
            {"name": "c", "grain": ["client_id", "offer_id"]},
            {"name": "d"},
        ],
        outputs={"a": a, "b": b, "c": c, "d": d},
        trace={
            "main": (REPORTED, trace),
            "ops": (OPERATIONAL, [{"client_id": i, "reason": "blocked"} for i in (7, 8)]),
        },
        run_id=run_id,
    )


def _every_page(conn: Connection, run: str, outcome: str, stage: str | None) -> list[Any]:
    """Every item of one anomaly list, paged two at a time, and the totals of its pages."""
    items, totals, token = [], set(), None
    while True:
        page = anomalies(conn, run, outcome, stage, limit=2, after=token)
        items += page["items"]
        totals.add(page["total"])
        if (token := page["next"]) is None:
            return [items, totals]


def _stored(conn: Connection, run: str) -> int:
    return conn.execute(
        text("SELECT count(*) FROM anomalies a JOIN runs r ON r.pk = a.run_pk WHERE r.run_id = :r"),
        {"r": run},
    ).scalar_one()


def test_a_group_lists_the_same_whether_stored_or_read_from_the_keys(
    build: RunBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = varied(build, "lean-stored")
    monkeypatch.setattr(classify, "DENSE_MIN_KEYS", 0)
    monkeypatch.setattr(classify, "DENSE_SHARE", 0.0)
    dense = varied(build, "lean-dense")
    with build.engine.connect() as conn:
        assert _stored(conn, stored) > 10
        assert _stored(conn, dense) == 0  # every group left to key_outcomes
        listed = 0
        for outcome in (o for o in Outcome if o not in UNREMARKABLE):
            for stage in (None, "a", "b", "c", "d"):
                mine = _every_page(conn, stored, outcome.label, stage)
                other = _every_page(conn, dense, outcome.label, stage)
                assert mine == other, (outcome, stage)
                assert len(mine[1]) == 1 and len(mine[0]) == next(iter(mine[1]))
                listed += len(mine[0])
    # Each kind above is there (so the comparison compared something), once per stage list
    # and once in the list of every stage.
    assert listed >= 2 * 20
    with build.engine.connect() as conn:
        grain = anomalies(conn, dense, "grain_violation", "d")["items"]
        expanded = anomalies(conn, dense, "expanded")["items"]
    # Two rows at d with d's grain the key: the clients kept with two offers, and 11.
    assert all(i["rows_out"] >= 2 for i in grain) and len(grain) > 5
    eleven = [i for i in grain if i["key"] == {"client_id": 11}]
    assert eleven and eleven[0]["outcome"] == "multiplied"
    assert eleven[0]["rows_out"] == eleven[0]["rows_in"] + 1
    assert expanded and {i["stage"] for i in expanded} == {"b"}
    assert all(i["rows_out"] == 2 and i["extra_rows"] == 1 for i in expanded)


def test_large_groups_are_not_stored_twice(build: RunBuilder) -> None:
    """With the default thresholds a small run stores its groups; the rule is by share."""
    summaries = [
        {
            "stage_index": 0,
            "outcomes": {"entered": 100_000, "expanded": 30_000, "orphaned": 90},
            "flags": {"grain_violation": 12_000},
        },
        {
            "stage_index": 1,
            "outcomes": {"passed": 100_000, "partially_dropped": 1_999},
            "flags": {"grain_violation": 0},
        },
    ]
    dense = classify.dense_groups(summaries, 100_000)
    assert dense == {(0, Outcome.EXPANDED), (0, Outcome.GRAIN_VIOLATION)}
    assert classify.dense_groups(summaries, 1_000_000) == {(0, Outcome.EXPANDED)}


def _plan(conn: Connection, sql: str, **params: Any) -> str:
    conn.execute(text("SET LOCAL enable_seqscan = off"))
    return "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {sql}"), params))


def test_one_index_per_purpose(build: RunBuilder) -> None:
    run = varied(build, "lean-indexes")
    with build.engine.connect() as conn:
        pk = conn.execute(text("SELECT pk FROM runs WHERE run_id = :r"), {"r": run}).scalar()
        names = conn.execute(
            text("SELECT indexname FROM pg_indexes WHERE tablename = :t ORDER BY 1"),
            {"t": f"key_outcomes_r{pk}"},
        ).scalars()
        # Adopted at ATTACH, none built twice; no primary key beside the key index.
        assert list(names) == [
            f"ix_key_outcomes_r{pk}_{c}" for c in ("final", "key", "traced", "traced_reported")
        ]
        # The `targeted` cell pages by key through the key index, no sort of its keys.
        plan = _plan(
            conn,
            "SELECT key FROM key_outcomes WHERE run_pk = :pk AND entered AND targeted "
            "AND NOT traced ORDER BY key LIMIT 10",
            pk=pk,
        )
        assert f"ix_key_outcomes_r{pk}_key" in plan and "Sort" not in plan, plan
        # A comparison cell of keys not targeted: the partial (final, key) index.
        plan = _plan(
            conn,
            "SELECT key FROM key_outcomes WHERE run_pk = :pk AND final = 4 ORDER BY key LIMIT 10",
            pk=pk,
        )
        assert f"ix_key_outcomes_r{pk}_final" in plan and "Sort" not in plan, plan
        every = gap_keys(conn, run, "targeted", limit=1000)
        assert every["total"] == len(every["items"]) > 10
        keys = [i["key"]["client_id"] for i in every["items"]]
        assert keys == sorted(keys, key=str)  # the stored text's order


def test_unchanged_cells_page_through_the_lean_indexes(build: RunBuilder) -> None:
    """A comparison of a run with itself: every cell unchanged, each read by index."""
    first = varied(build, "lean-cmp-a")
    with build.engine.begin() as conn:  # the same pipeline and files under another id
        document = conn.execute(
            text("SELECT manifest FROM runs WHERE run_id = :r"), {"r": first}
        ).scalar_one()
    document["run"]["id"] = "lean-cmp-b"
    second = ingest_manifest(build.engine, parse_manifest(document, base_dir=Path("/")))
    with build.engine.connect() as conn:
        summary = compare(conn, first, second)
        assert summary["changed_keys"] == 0
        for cell in summary["matrix"]:
            assert cell["a"] == cell["b"]
            page = compare_keys(conn, first, second, cell["a"], cell["b"], limit=1000)
            assert len(page["items"]) == cell["keys"] == page["total"]
            assert all(i["first_difference"] is None for i in page["items"])


_KEYS_WITH_STAGES = (
    "SELECT k.key, p.stages, p.codes, k.final FROM key_outcomes k "
    "JOIN key_patterns p ON p.run_pk = k.run_pk AND p.pattern = k.pattern ORDER BY k.key"
)


def _answers(conn: Connection, run: str) -> list[Any]:
    """Everything a classification stores of a run, run ids aside."""
    pk = conn.execute(text("SELECT pk FROM runs WHERE run_id = :r"), {"r": run}).scalar_one()
    keys = text(_KEYS_WITH_STAGES.replace("ORDER BY", "WHERE k.run_pk = :pk ORDER BY"))
    return [
        [tuple(r) for r in conn.execute(keys, {"pk": pk})],
        conn.execute(text("SELECT totals, gap_cells FROM runs WHERE pk = :pk"), {"pk": pk}).one(),
        conn.execute(
            text(
                "SELECT outcomes, rows, flags, totals FROM stage_summaries WHERE run_pk = :pk "
                "ORDER BY stage_index"
            ),
            {"pk": pk},
        ).all(),
        conn.execute(
            text(
                "SELECT outcome, stage, key, rows_in, rows_out, rows_dropped FROM anomalies "
                "WHERE run_pk = :pk ORDER BY 1, 2, 3"
            ),
            {"pk": pk},
        ).all(),
    ]


def test_outputs_joined_one_at_a_time_classify_alike(
    build: RunBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big run joins its stage outputs onto its keys a few at a time, to stay within the
    classifier's memory: the answers (docs/semantics.md#outcomes per key and stage,
    #reconciliation totals) are those of one join of them all."""
    together = varied(build, "joins-together")
    monkeypatch.setattr(classify, "_JOINED_KEYS", 1)  # one output (or the drops) a statement
    apart = varied(build, "joins-apart")
    with build.engine.connect() as conn:
        mine, other = _answers(conn, together), _answers(conn, apart)
    assert len(mine[0]) > 40 and mine[3]  # keys, and anomalies, were compared
    assert mine == other


def test_a_dataset_stored_as_several_chunks_answers_as_one_pass(
    build: RunBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs store a dataset as zstd Parquet chunks of about a million rows each, written by
    DuckDB, and the classifier reads them back in order: a run of several chunks a dataset
    answers as the same files ingested in one pass (docs/semantics.md#outcomes,
    #reconciliation)."""
    a = [{"client_id": i, "offer_id": 0} for i in range(10_000)]
    b = [{"client_id": i, "offer_id": o} for i in range(0, 10_000, 2) for o in (1, 2)]
    b += [{"client_id": 7, "offer_id": 1}]  # multiplied
    trace = [{"client_id": i, "stage": "b", "reason": "excluded"} for i in range(1, 9_000, 2)]
    one_pass = build.run(
        stages=[{"name": "a"}, {"name": "b", "grain": ["client_id", "offer_id"]}],
        outputs={"a": a, "b": b},
        trace={"main": (REPORTED, trace)},
        run_id="chunks-one-pass",
    )
    with build.engine.begin() as conn:
        document = conn.execute(
            text("SELECT manifest FROM runs WHERE run_id = :r"), {"r": one_pass}
        ).scalar_one()
    document["run"]["id"] = "chunks-jobs"
    monkeypatch.setattr(chunk_files, "CHUNK_ROWS", 4096)  # two row groups of 2,048 a chunk
    monkeypatch.setattr(chunk_files, "_ROW_GROUP", 2048)
    submitted = submit_run(build.engine, parse_manifest(document, base_dir=Path("/")))
    for dataset_id in submitted.dataset_ids:
        ingest_step(build.engine, dataset_id)
    classify_step(build.engine, submitted.run_pk)
    with build.engine.connect() as conn:
        chunks = conn.execute(
            text("SELECT count(*) FROM dataset_chunks WHERE run_pk = :pk GROUP BY dataset_id "
                 "ORDER BY 1 DESC LIMIT 1"),
            {"pk": submitted.run_pk},
        ).scalar_one()  # fmt: skip
        assert chunks >= 3  # 10,000 keys at a: several chunks
        mine, other = _answers(conn, one_pass), _answers(conn, "chunks-jobs")
    assert len(mine[0]) == 10_000 and mine[3]
    assert mine == other


def test_going_down_to_0004_and_up_keeps_stored_runs_answering(
    scratch: Engine, tmp_path: Path
) -> None:
    """A stored run survives 0008 and 0007 both ways: under 0004 every key holds its stages
    and codes again (what the code of then reads), and back at head it answers the same."""
    db.upgrade(scratch)
    run = varied(RunBuilder(tmp_path, scratch), "lean-migrated")

    def answers() -> list[Any]:
        with scratch.connect() as conn:
            return [
                anomalies(conn, run, "expanded")["items"],
                anomalies(conn, run, "grain_violation", limit=3)["items"],
                gap_keys(conn, run, "targeted", limit=5)["items"],
                gap_keys(conn, run, "counted_twice", reporting=True)["items"],
            ]

    before = answers()
    assert all(before)
    with scratch.connect() as conn:
        keys = [tuple(r) for r in conn.execute(text(_KEYS_WITH_STAGES))]
        patterns = conn.execute(text("SELECT count(*) FROM key_patterns")).scalar()
    assert len(keys) > patterns > 5  # keys share patterns
    command.downgrade(db.alembic_config(scratch), "0004")
    with scratch.connect() as conn:
        stored = "SELECT key, stages, codes, final FROM key_outcomes ORDER BY key"
        assert [tuple(r) for r in conn.execute(text(stored))] == keys
    db.upgrade(scratch)
    assert answers() == before
    with scratch.connect() as conn:
        assert [tuple(r) for r in conn.execute(text(_KEYS_WITH_STAGES))] == keys
        indexes = conn.execute(
            text("SELECT indexdef FROM pg_indexes WHERE tablename = 'key_outcomes'")
        ).scalars()
        assert sum("WHERE" in i for i in indexes) == 3  # the cell and final indexes, partial


def test_going_below_0007_stores_every_group_again(
    scratch: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The code before 0007 reads the whole anomaly list from `anomalies`."""
    db.upgrade(scratch)
    monkeypatch.setattr(classify, "DENSE_MIN_KEYS", 0)
    monkeypatch.setattr(classify, "DENSE_SHARE", 0.0)
    run = varied(RunBuilder(tmp_path, scratch), "lean-down")
    with scratch.connect() as conn:
        assert _stored(conn, run) == 0
        listed = sum(
            anomalies(conn, run, o.label, limit=1)["total"]
            for o in Outcome
            if o not in UNREMARKABLE
        )
    assert listed > 20
    command.downgrade(db.alembic_config(scratch), "0004")
    with scratch.connect() as conn:
        assert _stored(conn, run) == listed
        rows = conn.execute(
            text(
                "SELECT a.rows_in, a.rows_out, a.rows_dropped FROM anomalies a "
                "WHERE a.key = '11' AND a.stage = 3 ORDER BY a.outcome"
            )
        ).all()
    assert [tuple(r) for r in rows] == [(2, 3, 0), (2, 3, 0)]  # multiplied, grain violation
