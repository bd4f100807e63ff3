"""The human tables never cut a figure: `report`, `where`, `anomalies` and `history` at 80
and 120 columns and piped without COLUMNS, on a 7-stage run of 200,000 clients.

Every figure checked is read from the `--json` answer of the same command and
looked for whole, where it belongs (the row of its label, the column of its stage),
written as the tables write it (`render.figure`). No line may be wider than the
width and no `…` may appear.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import Engine

from tests.pipelines import RunBuilder
from tracer import render
from tracer.cli import main
from tracer.cli_support import output_width
from tracer.demo import build_demo
from tracer.manifest import load_manifest
from tracer.outcomes import STAGE_OUTCOMES
from tracer.store import ingest_manifest

N = 200_000
STAGES = ["selection", "exclusions", "offer_selection", "enrichment", "buffer", "scoring", "output"]
WIDTHS = (80, 120, None)  # None: piped with COLUMNS unset
CLIENT = 40  # dropped at exclusions, in an operational source only
MULTIPLIED = 1001  # one extra row at enrichment, two offers, one dropped at buffer


def _table(ids: np.ndarray, offer: np.ndarray | None = None) -> pa.Table:
    """A stage output: client_id and offer ("0" unless given)."""
    offer = np.zeros(len(ids), dtype=np.int64) if offer is None else offer
    return pa.table({"client_id": pa.array(ids), "offer": pc.cast(pa.array(offer), pa.string())})


def _trace(ids: np.ndarray, reason: str) -> pa.Table:
    return pa.table({"client_id": pa.array(ids), "reason": pa.array([reason] * len(ids))})


def _big_outputs() -> tuple[dict[str, pa.Table], dict[str, pa.Table]]:
    """Stage outputs and traceability, built with numpy (no 200k Python dicts)."""
    ids = np.arange(1, N + 1, dtype=np.int64)
    gone = ids % 8 == 0  # 25,000 leave at exclusions: reported, operational only, orphaned
    reported, operational = ids[ids % 16 == 0], ids[ids % 32 == 8]
    kept = ids[~gone]
    twice = kept[kept % 5 == 1]  # expanded at offer_selection: a second offer
    offers = np.concatenate([kept, twice])
    offer_no = np.concatenate([np.zeros(len(kept), np.int64), np.ones(len(twice), np.int64)])
    extra = offers[(offers % 1000 == 1) & (offer_no == 0)]  # multiplied at enrichment
    enriched = (np.concatenate([offers, extra]), np.concatenate([offer_no, np.zeros_like(extra)]))
    # At buffer the second offer is dropped (reported): partially dropped.
    first = enriched[1] == 0
    buffer = (enriched[0][first], enriched[1][first])
    appeared = np.arange(N + 1, N + 51, dtype=np.int64)
    final = np.concatenate([buffer[0], appeared])
    outputs = {
        "selection": _table(ids),
        "exclusions": _table(kept),
        "offer_selection": _table(offers, offer_no),
        "enrichment": _table(*enriched),
        "buffer": _table(*buffer),
        "scoring": _table(*buffer),
        "output": _table(final),
    }
    trace = {
        "rep": _trace(reported, "opted_out"),
        "ops": _trace(operational, "blocked"),
        "buffer_rep": _trace(twice, "lower_priority_offer"),
    }
    return outputs, trace


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> str:
    """Ingested once for the module: RunBuilder writes the manifest, pyarrow the data."""
    build = RunBuilder(tmp_path_factory.mktemp("render"), engine)
    outputs, trace = _big_outputs()
    schema = pa.schema([("client_id", pa.int64()), ("offer", pa.string())])
    trace_schema = pa.schema([("client_id", pa.int64()), ("reason", pa.string())])
    sources = {"rep": ("exclusions", True), "ops": ("exclusions", False)}
    sources["buffer_rep"] = ("buffer", True)
    fanout = {"grain": ["client_id", "offer"], "fanout": "expected"}
    manifest = build.manifest(
        stages=[{"name": s, **(fanout if s == "offer_selection" else {})} for s in STAGES],
        outputs={s: [] for s in STAGES},
        trace={
            name: ({"reported": rep, "stage": stage, "reason_column": "reason"}, [])
            for name, (stage, rep) in sources.items()
        },
        schemas={**{s: schema for s in STAGES}, **{t: trace_schema for t in sources}},
        run_id="render-big",
    )
    for name, table in {**outputs, **trace}.items():
        pq.write_table(table, manifest.parent / f"{name}.parquet")
    return ingest_manifest(engine, load_manifest(manifest))


# --- reading the text back --------------------------------------------------------------------

_CELL = re.compile(r"^(?:[+-]?\d{1,3}(?:,\d{3})*|·)$")


def stage_cells(text: str) -> dict[tuple[str, str], str]:
    """(row label, stage name) -> cell, from every per-stage table of a report's text."""
    legend = dict(re.findall(r"(\d+) (\S+)", _legend(text)))
    lines = text.splitlines()
    cells: dict[tuple[str, str], str] = {}
    for i, line in enumerate(lines[:-1]):
        if not (line.startswith(" ") and set(lines[i + 1]) == {"─"}):
            continue  # a stage table's header: an empty label column, then the stages
        stages = [legend.get(h, h) for h in line.split()]
        for row in lines[i + 2 :]:
            tokens = row.split()
            if not tokens:
                continue  # the blank line between sections
            if len(tokens) <= len(stages) or not all(map(_CELL.match, tokens[-len(stages) :])):
                break
            label = " ".join(tokens[: -len(stages)])
            for stage, cell in zip(stages, tokens[-len(stages) :], strict=True):
                assert (label, stage) not in cells, f"{label} at {stage} shown twice"
                cells[label, stage] = cell
    return cells


def _legend(text: str) -> str:
    """The `stages: 1 selection · 2 exclusions ...` lines naming numbered stage columns."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("stages: ")), None)
    if start is None:
        return ""
    more = [line for line in lines[start + 1 :] if re.match(r"^  \d+ \S", line)]
    return "\n".join(lines[start : start + 1 + len(more)])


def expected_stage_cells(data: dict[str, Any]) -> dict[tuple[str, str], str]:
    """What the per-stage table must show, from the JSON (zero is `·`)."""
    out: dict[tuple[str, str], str] = {}
    for s in data["stages"]:
        t, flags, multiplied = s["totals"], s["flags"], s["rows"]["multiplied"]
        values = {
            "keys in": t["keys_in"],
            "keys out": t["keys_out"],
            "keys with drops": t["keys_dropped"],
            "rows in": t["rows_in"],
            "rows out": t["rows_out"],
            "rows dropped": t["rows_dropped"],
            **{o.label: s["outcomes"][o.label] for o in STAGE_OUTCOMES},
            "grain_violation": flags["grain_violation"],
            "null-key rows": flags["null_key"]["total"],
            "duplicate rows": flags["duplicate_rows"],
        }
        for label, value in values.items():
            out[label, s["stage"]] = render.figure(value) if value else "·"
        extra = multiplied["rows_out"] - multiplied["rows_in"]
        out["extra rows", s["stage"]] = render.figure(extra, sign=True) if extra else "·"
    return out


def assert_fits(text: str, width: int | None) -> None:
    limit = width or render.MAX_WIDTH
    assert "…" not in text, text
    too_wide = [line for line in text.splitlines() if len(line) > limit]
    assert not too_wide, f"wider than {limit}: {too_wide}"


def assert_line(text: str, *cells: str) -> None:
    """A line holding exactly these cells, in this order, each whole."""
    pattern = "^ *" + " +".join(map(re.escape, cells)) + "( |$)"
    assert re.search(pattern, text, re.M), f"no line {cells!r} in:\n{text}"


def assert_report(text: str, data: dict[str, Any]) -> None:
    shown = stage_cells(text)
    for (label, stage), cell in expected_stage_cells(data).items():
        if cell == "·":
            assert shown.get((label, stage), "·") == "·", (label, stage)
        else:
            assert shown.get((label, stage)) == cell, (label, stage, shown.get((label, stage)))
    totals = data["totals"]
    labels = dict(render._TOTALS)
    for name, value in totals.items():
        if name == "reconciles":
            assert_line(text, "reconciles", "yes" if value else "NO")
        elif name == "failed_conditions":  # why not, each condition whole
            for condition in value:
                assert_words(text, condition)
        else:  # every total of the JSON, on the line of its label
            assert_line(text, labels[name], render.figure(value))
    before, _, reporting = text.partition("why the reporting gap is")
    for part, key, cells in (
        (before, "gap", data["gap_cells"]),
        (reporting, "reporting_gap", data["reporting_gap_cells"]),
    ):
        title = "why the " + key.replace("_", " ") + " is " + render.figure(totals[key], sign=True)
        assert (title in text) == bool(cells), title
        for c in cells:
            flags = ["yes" if c[f] else "no" for f in ("entered", "targeted", "traced")]
            figures = [render.figure(c["keys"]), render.figure(c["contribution"], sign=True)]
            # The flags columns give way to the figures when the width is short.
            if not re.search(r"^cell\s+entered", part, re.M):
                flags = []
            assert_line(part, c["cell"], *flags, *figures)
            per_key = c["contribution"] // c["keys"]
            for cause in c["causes"]:  # the cell split by cause, each figure whole
                keys, moved = cause["keys"], per_key * cause["keys"]
                assert_line(
                    part, render.cause_text(cause), render.figure(keys), render.figure(moved, True)
                )


def assert_words(text: str, phrase: str) -> None:
    """The phrase in the text, wrapped anywhere between its words but no word cut."""
    pattern = r"\s+".join(map(re.escape, phrase.split()))
    assert re.search(rf"(?<!\S){pattern}", text), f"{phrase!r} not in:\n{text}"


# --- the commands -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def invoke(database_url: str) -> Any:
    """Run a command with COLUMNS set (None: unset, as in `tracer reconciliation RUN > file`)."""
    runner = CliRunner()

    def run(width: int | None, *args: str) -> str:
        env = {"DATABASE_URL": database_url, "COLUMNS": None if width is None else str(width)}
        result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    return run


def shown_reconciliation(invoke: Any, width: int | None, run: str) -> tuple[dict[str, Any], str]:
    """The reconciliation as JSON and as text, the text checked to fit and show every figure."""
    data = json.loads(invoke(width, "reconciliation", run, "--json"))
    text = invoke(width, "reconciliation", run)
    assert_fits(text, width)
    assert_report(text, data)
    return data, text


@pytest.mark.parametrize("width", WIDTHS)
def test_report_shows_every_figure_whole(invoke: Any, big_run: str, width: int | None) -> None:
    data, _ = shown_reconciliation(invoke, width, big_run)
    assert data["stages"][1]["totals"]["keys_in"] == N  # the figures are as wide as promised


def test_report_piped_is_as_wide_as_its_widest_table(invoke: Any, big_run: str) -> None:
    # Piped without COLUMNS: stage names as headers, no numbered legend, not cut to 80.
    text = invoke(None, "reconciliation", big_run)
    assert "stages: " not in text
    headers = next(line for line in text.splitlines() if line.startswith(" ") and "output" in line)
    assert headers.split() == STAGES
    assert max(map(len, text.splitlines())) > 80


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("client", [CLIENT, MULTIPLIED])
def test_where_shows_every_figure_whole(
    invoke: Any, big_run: str, width: int | None, client: int
) -> None:
    data = json.loads(invoke(width, "journey", big_run, str(client), "--json"))
    text = invoke(width, "journey", big_run, str(client))
    assert_fits(text, width)
    assert_words(text, f"client {client} in run {big_run}: {data['final_outcome']}")
    drops = [
        f
        for f in ("rows_dropped_reported", "rows_dropped_operational")
        if any(s[f] for s in data["stages"])
    ]
    assert drops
    for s in data["stages"]:
        figures = [render.figure(s[f]) for f in ("rows_in", "rows_out", *drops)]
        assert_line(text, s["stage"], s["outcome"], *figures)
        for r in s["reasons"]:
            rows = f"{render.figure(r['rows'])} row{'s' * (r['rows'] != 1)}"
            assert_words(text, f"{r['source']}: {r['reason']} ({rows}")
    for a in data["anomalies"]:
        assert_words(text, f"{a['anomaly']} at {a['stage']}")
    if any(s["grain_violation"] for s in data["stages"]):
        assert "+ grain violation" in text


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("outcome", ["partially_dropped", "multiplied", "orphaned"])
def test_anomalies_show_every_figure_whole(
    invoke: Any, big_run: str, width: int | None, outcome: str
) -> None:
    args = ("anomalies", big_run, "--outcome", outcome, "--limit", "250")
    data = json.loads(invoke(width, *args, "--json"))
    text = invoke(width, *args)
    assert_fits(text, width)
    assert len(data["items"]) >= 200
    for item in data["items"]:
        figures = ("rows_in", "rows_out", "rows_dropped", "extra_rows")
        assert_line(
            text,
            item["stage"],
            render.key_text(item["key"]),
            *(render.figure(item[f]) for f in figures),
        )


@pytest.mark.parametrize("width", WIDTHS)
def test_gap_cell_keys_explain_themselves(invoke: Any, big_run: str, width: int | None) -> None:
    args = ("gap-keys", big_run, "targeted_without_entering")
    data = json.loads(invoke(width, *args, "--json"))
    keys = [render.key_text(item["key"]) for item in data["items"]]
    assert len(keys) == 50 and invoke(width, *args, "--keys").splitlines() == keys
    text = invoke(width, *args)
    assert_fits(text, width)
    for item in data["items"]:
        assert_line(text, render.key_text(item["key"]), render.cause_text(item), "targeted")
    # Lost in reporting: dropped with a reason reporting never shows, and the reason is there.
    args = ("gap-keys", big_run, "lost", "--reporting", "--limit", "5")
    data = json.loads(invoke(width, *args, "--json"))
    text = invoke(width, *args)
    assert_fits(text, width)
    assert_words(text, f"{render.figure(data['total'])} keys")
    for item in data["items"]:
        assert_line(text, render.key_text(item["key"]), render.cause_text(item))
        assert_words(text, render.reasons_text(item["reasons"]))


@pytest.mark.parametrize("width", WIDTHS)
def test_history_is_a_table_of_every_run(invoke: Any, big_run: str, width: int | None) -> None:
    data = json.loads(invoke(width, "history", str(MULTIPLIED), "--json"))
    text = invoke(width, "history", str(MULTIPLIED))
    assert_fits(text, width)
    assert big_run in [item["run"]["run_id"] for item in data["items"]]
    assert_words(text, f"client {MULTIPLIED} in")
    assert_words(text, f"{len(data['items'])} run")
    for item in data["items"]:
        run = item["run"]
        when = datetime.fromisoformat(run["classified_at"]).astimezone(UTC)
        stamp = when.strftime("%Y-%m-%d %H:%M:%S")
        assert_line(text, run["run_id"], run["pipeline"], item["final_outcome"], stamp)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> str:
    """The issue's example: the demo (45k clients, every anomaly, schema drift, a label)."""
    folder = tmp_path_factory.mktemp("render-demo")
    return ingest_manifest(engine, load_manifest(build_demo(folder, run_id="render-demo")))


@pytest.mark.parametrize("width", WIDTHS)
def test_demo_reads_at_every_width(invoke: Any, demo_run: str, width: int | None) -> None:
    data, text = shown_reconciliation(invoke, width, demo_run)
    for s in data["stages"]:
        for c in s["flags"]["dropped_columns"]:
            assert_words(text, f"{s['stage']}: lost")
            assert_words(text, f"{c['column']!r} (present in {c['parent']})")
    # A client with reasons and one with a grain violation, found through the JSON.
    for outcome in ("partially_dropped", "multiplied"):
        args = ("anomalies", demo_run, "--outcome", outcome, "--limit", "1", "--json")
        client = render.key_text(json.loads(invoke(width, *args))["items"][0]["key"])
        journey = json.loads(invoke(width, "journey", demo_run, client, "--json"))
        shown = invoke(width, "journey", demo_run, client)
        assert_fits(shown, width)
        for s in journey["stages"]:
            assert_line(shown, s["stage"], s["outcome"], render.figure(s["rows_in"]))


def _scaled(value: Any, factor: int) -> Any:
    if isinstance(value, dict):
        return {k: _scaled(v, factor) for k, v in value.items()}
    if isinstance(value, list):
        return [_scaled(v, factor) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return value * factor
    return value


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("factor", [10, 1000])
def test_report_layout_gives_way_to_longer_figures(
    invoke: Any, big_run: str, width: int, factor: int
) -> None:
    # 2,000,000 and 200,000,000 clients: the stage columns go numbered, closer, then in groups.
    data = _scaled(json.loads(invoke(width, "reconciliation", big_run, "--json")), factor)
    console = Console(width=width, color_system=None)
    with console.capture() as captured:
        console.print(render.report(data, width))
    text = captured.get()
    assert_fits(text, width)
    assert_report(text, data)


def test_output_width_follows_columns_then_the_terminal() -> None:
    assert output_width({"COLUMNS": "91"}, tty=False) == 91
    assert output_width({"COLUMNS": "91"}, tty=True) == 91
    assert output_width({"COLUMNS": "wide"}, tty=False) is None
    assert output_width({}, tty=False) is None  # piped: as wide as the tables need
    assert isinstance(output_width({}, tty=True), int)
