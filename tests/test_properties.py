"""Property test: over random small pipelines, tracer agrees with a plain-Python reading of
docs/semantics.md, key by key and stage by stage, and its totals obey the identities.

The oracle below is written from the contract alone (no tracer code), over the
same rows the test writes to Parquet: linear pipelines, copy splits and routed
splits with a merge, expected fan-out with grains, null keys, reported and
operational traceability.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from tests.pipelines import RunBuilder
from tracer.outcomes import Final, parse_stage_cells

settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

KEYS = range(1, 6)
OUT_SCHEMA = pa.schema([("client_id", pa.int64()), ("offer", pa.string())])
TRACE_SCHEMA = pa.schema(
    [("client_id", pa.int64()), ("stage", pa.string()), ("reason", pa.string())]
)
_counter = itertools.count()


@st.composite
def pipelines(draw: st.DrawFn) -> dict[str, Any]:
    shape = draw(st.sampled_from(["linear", "copy", "route"]))
    if shape == "linear":
        stages: list[dict[str, Any]] = [{"name": f"s{i}"} for i in range(draw(st.integers(2, 4)))]
    else:
        stages = [
            {"name": "src", "split": "route" if shape == "route" else "copy"},
            {"name": "left", "parents": ["src"]},
            {"name": "right", "parents": ["src"]},
            {"name": "merge", "parents": ["left", "right"]},
        ]
    for s in stages[1:]:
        if draw(st.booleans()):
            s["grain"] = ["client_id", "offer"]
            if draw(st.booleans()):
                s["fanout"] = "expected"
    outputs = {}
    for s in stages:
        rows = []
        for k in KEYS:
            for _ in range(draw(st.integers(0, 3))):
                rows.append({"client_id": k, "offer": draw(st.sampled_from("xy"))})
        rows += [{"client_id": None, "offer": "x"}] * draw(st.integers(0, 1))
        outputs[s["name"]] = rows
    names = [s["name"] for s in stages]
    trace_rows = st.fixed_dictionaries(
        {
            "client_id": st.one_of(st.sampled_from([*KEYS, 9]), st.none()),
            "stage": st.sampled_from(names),
            "reason": st.sampled_from(["r1", "r2"]),
        }
    )
    rep = draw(st.lists(trace_rows, max_size=5))
    ops = draw(st.lists(trace_rows, max_size=3))
    return {"stages": stages, "outputs": outputs, "rep": rep, "ops": ops}


def oracle(p: dict[str, Any]) -> tuple[dict[tuple[str, int], str], dict[int, str]]:
    """Outcome per (stage, key) and final outcome per key, straight from the contract."""
    stages = p["stages"]
    names = [s["name"] for s in stages]
    parents = {
        s["name"]: s.get("parents", [names[i - 1]] if i else []) for i, s in enumerate(stages)
    }
    children = {n: [c for c in names if n in parents[c]] for n in names}
    route = {s["name"] for s in stages if s.get("split") == "route"}
    out = {
        n: Counter(r["client_id"] for r in p["outputs"][n] if r["client_id"] is not None)
        for n in names
    }
    rep = {
        n: Counter(
            r["client_id"] for r in p["rep"] if r["stage"] == n and r["client_id"] is not None
        )
        for n in names
    }
    ops = {
        n: Counter(
            r["client_id"] for r in p["ops"] if r["stage"] == n and r["client_id"] is not None
        )
        for n in names
    }
    grains: dict[str, dict[int, int]] = defaultdict(dict)
    for s in stages:
        by_key = defaultdict(set)
        for r in p["outputs"][s["name"]]:
            if r["client_id"] is not None:
                by_key[r["client_id"]].add(r["offer"] if "grain" in s else None)
        grains[s["name"]] = {k: len(v) for k, v in by_key.items()}
    keys = set().union(*out.values(), *rep.values(), *ops.values())

    def present(stage: str, k: int) -> bool:
        return out[stage][k] + rep[stage][k] + ops[stage][k] > 0

    result: dict[tuple[str, int], str] = {}
    rows_in: dict[tuple[str, int], int] = {}
    for s in stages:
        n = s["name"]
        for k in keys:
            i = 0
            for par in parents[n]:
                if par in route and not present(n, k) and any(present(c, k) for c in children[par]):
                    continue
                i += out[par][k]
            o, r, q = out[n][k], rep[n][k], ops[n][k]
            d = r + q
            rows_in[n, k] = i
            if i + o + d == 0:
                continue
            if not parents[n]:
                result[n, k] = "entered" if o >= 1 else "phantom_drop"
                continue
            distinct = grains[n].get(k, 0) == o
            if i >= 1 and o == i and d == 0:
                outcome = "passed"
            elif i >= 1 and o > i and d == 0 and s.get("fanout") == "expected" and distinct:
                outcome = "expanded"
            elif i >= 1 and o > i:
                outcome = "multiplied"
            elif i >= 2 and 1 <= o < i and d == 0:
                outcome = "collapsed"
            elif i >= 1 and o == 0 and r >= 1:
                outcome = "dropped"
            elif i >= 1 and o == 0 and r == 0 and q >= 1:
                outcome = "dropped_unreported"
            elif i >= 2 and 1 <= o < i and o + d == i:
                outcome = "partially_dropped"
            elif i >= 1 and o == 0 and d == 0:
                outcome = "orphaned"
            elif o >= 1 and d >= 1:
                outcome = "conflict"
            elif i == 0 and o >= 1:
                outcome = "appeared"
            else:
                outcome = "phantom_drop"
            result[n, k] = outcome
    finals = {}
    leaves = [n for n in names if not children[n]]
    for k in keys:
        if any(out[n][k] for n in leaves):
            finals[k] = "targeted"
            continue
        left = [n for n in names if (n, k) in result and rows_in[n, k] >= 1 and out[n][k] == 0]
        finals[k] = result[left[-1], k] if left else "never_entered"
    return result, finals


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("props")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=pipelines())
def test_outcomes_and_totals_obey_the_contract(
    p: dict[str, Any], engine: Engine, root: Path
) -> None:
    build = RunBuilder(root, engine)
    spec = {"stage_column": "stage", "reason_column": "reason"}
    run = build.run(
        stages=p["stages"],
        outputs=p["outputs"],
        trace={
            "rep": ({"reported": True, **spec}, p["rep"]),
            "ops": ({"reported": False, **spec}, p["ops"]),
        },
        schemas={
            **{s["name"]: OUT_SCHEMA for s in p["stages"]},
            "rep": TRACE_SCHEMA,
            "ops": TRACE_SCHEMA,
        },
        run_id=f"prop-{next(_counter)}",
    )
    expected, finals = oracle(p)
    report = build.report(run)
    names = [s["stage"] for s in report["stages"]]
    with engine.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT k.key, p.stages, k.final FROM key_outcomes k "
                "JOIN runs r ON r.pk = k.run_pk "
                "JOIN key_patterns p ON p.run_pk = k.run_pk AND p.pattern = k.pattern "
                "WHERE r.run_id = :run"
            ),
            {"run": run},
        ).all()
    got = {
        (names[index], int(key)): cell.outcome.label
        for key, cells, _ in stored
        for index, cell in enumerate(parse_stage_cells(cells))
        if cell is not None
    }
    assert got == expected
    assert {int(k): Final(f).label for k, _, f in stored} == finals
    final_labels = [f.label for f in Final]

    totals = report["totals"]
    # Every key has exactly one final outcome.
    assert sum(totals[f] for f in final_labels) == totals["keys"] == len(finals)
    assert totals["residual"] == (
        totals["entered"]
        - totals["targeted"]
        - totals["dropped"]
        - totals["dropped_unreported"]
        - totals["orphaned"]
    )
    # The cells sum to the gaps.
    assert sum(c["contribution"] for c in report["gap_cells"]) == totals["gap"]
    assert sum(c["contribution"] for c in report["reporting_gap_cells"]) == totals["reporting_gap"]
    for stage in report["stages"]:
        # Each (stage, key) with in + out + drop > 0 has exactly one outcome.
        n = stage["stage"]
        assert sum(stage["outcomes"].values()) == sum(1 for (s, _) in expected if s == n)
        assert sum(v["rows_out"] for v in stage["rows"].values()) == sum(
            1 for r in p["outputs"][n] if r["client_id"] is not None
        )
        nulls = sum(1 for r in p["outputs"][n] if r["client_id"] is None)
        traced_nulls = sum(
            1 for r in p["rep"] + p["ops"] if r["client_id"] is None and r["stage"] == n
        )
        assert stage["flags"]["null_key"] == {
            "output": nulls,
            "traceability": traced_nulls,
            "total": nulls + traced_nulls,
        }
