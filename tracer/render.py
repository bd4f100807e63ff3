"""Human-readable tables for the CLI (the JSON shapes are the query results themselves).

A report whose figures cannot be read has failed, so every layout is planned for
the width it is printed at. A figure's column is as wide as its widest figure and
never wraps; names (stages, outcomes, gap cells, runs) stay whole while there is
room; only free text (reasons, labels, sample keys) may always wrap. When the
figures do not fit, the layout changes (stages become numbered columns, then
groups of columns; reasons move under the table) instead of letting rich cut a
number down to `…`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from tracer.outcomes import RUN_BREAKERS, STAGE_OUTCOMES

GAP = 2
"""Columns are two spaces apart (one of padding, one of invisible divider)."""
TEXT_FLOOR = 8
"""The narrowest a free-text column is planned at: below its length it wraps, never cuts."""
MIN_WIDTH = 80
"""Piped output without COLUMNS is never laid out narrower than a terminal would be ..."""
MAX_WIDTH = 200
"""... nor wider than this: beyond it the layouts fold rather than make endless lines."""

_BAD = {o.label for o in RUN_BREAKERS}
_RED = "bold red"

Cell = Text | str


def key_text(key: dict[str, object]) -> str:
    return "|".join(str(v) for v in key.values())


def figure(value: int, sign: bool = False) -> str:
    """How every count is written: thousands separated, signed where it is a difference."""
    return f"{value:+,}" if sign else f"{value:,}"


@dataclass(frozen=True)
class _Col:
    """A column and how it may give way when the table is too wide.

    figure: right-aligned, never wrapped (the layouts leave room for it or change).
    name: an identifier someone will type back (stage, outcome, cell); whole while it fits.
    text: free text; wraps, folding words longer than the column.
    """

    header: str
    kind: Literal["figure", "name", "text"] = "text"


def _fig(header: str) -> _Col:
    return _Col(header, "figure")


def _name(header: str) -> _Col:
    return _Col(header, "name")


def _width(cell: Cell) -> int:
    plain = cell.plain if isinstance(cell, Text) else cell
    return max((cell_len(line) for line in plain.split("\n")), default=0)


def _widths(cols: Sequence[_Col], rows: Sequence[Sequence[Cell]]) -> list[int]:
    return [max([_width(c.header), *(_width(r[i]) for r in rows)]) for i, c in enumerate(cols)]


def _needed(cols: Sequence[_Col], rows: Sequence[Sequence[Cell]], gap: int = GAP) -> int:
    """Width the table needs with figures and names whole and text at its floor."""
    widths = _widths(cols, rows)
    planned = [
        w if c.kind != "text" else min(w, TEXT_FLOOR) for c, w in zip(cols, widths, strict=True)
    ]
    return sum(planned) + gap * (len(cols) - 1)


def _table(
    cols: Sequence[_Col],
    rows: Sequence[Sequence[Cell]],
    width: int,
    sections: frozenset[int] = frozenset(),
    show_header: bool = True,
    gap: int = GAP,
) -> Table:
    """A borderless table for `width`; `sections` are the rows followed by a blank line.

    Names become wrapping text only when keeping them whole would leave no room.
    """
    if _needed(cols, rows, gap) > width:
        cols = [c if c.kind != "name" else _Col(c.header) for c in cols]
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, gap - 1, 0, 0),
        header_style="bold",
        show_header=show_header,
    )
    for col, size in zip(cols, _widths(cols, rows), strict=True):
        if col.kind == "text":
            table.add_column(col.header, overflow="fold")
        else:
            # no_wrap keeps rich from narrowing it; min_width from the content keeps it whole.
            justify = "right" if col.kind == "figure" else "left"
            table.add_column(col.header, justify=justify, no_wrap=True, min_width=size)
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=i in sections)
    return table


def natural_width(renderable: RenderableType) -> int:
    """The width to print at when piped without COLUMNS: that of the widest table."""
    console = Console(width=MAX_WIDTH)
    parts = renderable.renderables if isinstance(renderable, Group) else [renderable]
    tables = [p for p in parts if isinstance(p, Table)]
    widest = max((Measurement.get(console, console.options, t).maximum for t in tables), default=0)
    return min(max(widest, MIN_WIDTH), MAX_WIDTH)


def _heading(text: str) -> Text:
    return Text(text, style="bold")


def _count(value: int, style: str = "", sign: bool = False) -> Text:
    return Text(figure(value, sign), style=style) if value else Text("·", style="dim")


def _wrap_items(items: list[str], width: int, lead: str = "") -> Text:
    """Items joined by ` · `, broken only between items (`3 offer_selection` stays one)."""
    lines = [lead + items[0]] if items else [lead]
    for item in items[1:]:
        if cell_len(f"{lines[-1]} · {item}") <= width:
            lines[-1] += f" · {item}"
        else:
            lines.append(f"  {item}")
    return Text("\n".join(lines))


# --- tracer reconciliation ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    """One row of the per-stage table: a label and its count at every stage."""

    label: str
    values: list[int]
    style: str = ""
    sign: bool = False
    always: bool = False


def _stage_lines(stages: list[dict[str, Any]]) -> list[list[_Line]]:
    """The per-stage table's sections; a line that is zero at every stage is left out."""
    t = [s["totals"] for s in stages]
    keys = [
        _Line("keys in", [x["keys_in"] for x in t], always=True),
        _Line("keys out", [x["keys_out"] for x in t], always=True),
        _Line("keys with drops", [x["keys_dropped"] for x in t]),
    ]
    rows = [
        _Line("rows in", [x["rows_in"] for x in t], always=True),
        _Line("rows out", [x["rows_out"] for x in t], always=True),
        _Line("rows dropped", [x["rows_dropped"] for x in t]),
    ]
    outcomes = []
    for outcome in STAGE_OUTCOMES:
        label = outcome.label
        style = _RED if label in _BAD else ""
        outcomes.append(_Line(label, [s["outcomes"][label] for s in stages], style))
        if label == "multiplied":
            extra = [s["rows"][label]["rows_out"] - s["rows"][label]["rows_in"] for s in stages]
            outcomes.append(_Line("  extra rows", extra, style, sign=True))
    flags = [
        _Line("grain_violation", [s["flags"]["grain_violation"] for s in stages], _RED),
        _Line("null-key rows", [s["flags"]["null_key"]["total"] for s in stages], _RED),
        _Line("duplicate rows", [s["flags"]["duplicate_rows"] for s in stages], _RED),
    ]
    sections = [[x for x in part if x.always or any(x.values)] for part in (keys, rows, outcomes)]
    return [part for part in [*sections, [x for x in flags if any(x.values)]] if part]


def _stage_tables(stages: list[dict[str, Any]], width: int) -> list[RenderableType]:
    """Outcomes as rows, stages as columns (see `_grid`)."""
    return _grid(_stage_lines(stages), [s["stage"] for s in stages], width)


def _grid(sections: list[list[_Line]], names: list[str], width: int) -> list[RenderableType]:
    """Labels as rows, stages as columns: named if they fit, else numbered, else in groups.

    Rows of figures are what must stay readable; a column per stage keeps each figure
    next to its neighbours, and the outcome labels (what `--outcome` takes) stay whole.
    """
    lines = [x for part in sections for x in part]
    ends = frozenset(sum(len(p) for p in sections[: i + 1]) - 1 for i in range(len(sections) - 1))
    labels: list[Cell] = [Text(x.label, style=x.style) for x in lines]
    cells = [[_count(v, x.style, x.sign) for v in x.values] for x in lines]
    numbers = [str(i + 1) for i in range(len(names))]
    label_width = max((_width(x) for x in labels), default=0)

    def needed(indexes: list[int], headers: list[str], gap: int) -> int:
        return label_width + sum(
            gap + max([_width(headers[i]), *(_width(row[i]) for row in cells)]) for i in indexes
        )

    def table(indexes: list[int], headers: list[str], gap: int = GAP) -> Table:
        cols = [_name(""), *(_fig(headers[i]) for i in indexes)]
        rows = [[labels[r], *(cells[r][i] for i in indexes)] for r in range(len(lines))]
        return _table(cols, rows, width, ends, gap=gap)

    every = list(range(len(names)))
    if needed(every, names, GAP) <= width:
        return [table(every, names)]
    legend = _wrap_items(
        [f"{n} {name}" for n, name in zip(numbers, names, strict=True)], width, "stages: "
    )
    for gap in (GAP, 1):  # figures with thousands separators still read one space apart
        if needed(every, numbers, gap) <= width:
            return [legend, table(every, numbers, gap)]
    # Groups of consecutive stages, as even as the widest stage allows.
    groups = [[i] for i in every]
    for count in range(2, len(names) + 1):
        size = -(-len(names) // count)
        groups = [every[i : i + size] for i in range(0, len(names), size)]
        if all(needed(g, numbers, GAP) <= width for g in groups):
            break
    return [legend, *(table(g, numbers) for g in groups)]


_STAGE_NOTE = "per stage: distinct keys, or rows where the label says so; · is zero"


def report(data: dict[str, Any], width: int = MIN_WIDTH) -> Group:
    """Keys and rows per stage, the run's totals, and the cells that explain both gaps."""
    run, totals = data["run"], data["totals"]  # run: the header every answer carries
    title = f"run {run['run_id']} · pipeline {run['pipeline']}" + (
        f" · {run['label']}" if run.get("label") else ""
    )
    parts: list[RenderableType] = [
        _heading(title),
        Text(_STAGE_NOTE, style="italic"),
        *_stage_tables(data["stages"], width),
    ]
    drift = [
        f"  {s['stage']}: lost {'' if c['role'] == 'column' else c['role'] + ' '}column "
        f"{c['column']!r} (present in {c['parent']})"
        for s in data["stages"]
        for c in s["flags"]["dropped_columns"]
    ]
    if drift:
        parts.append(Text("schema drift:\n" + "\n".join(drift), style="yellow"))
    parts += [Text(""), _heading("run totals (distinct keys)"), _totals(totals, width)]
    if totals.get("failed_conditions"):
        parts.append(_wrap_items(totals["failed_conditions"], width, "does not reconcile: "))
    for name, cells in (("gap", data["gap_cells"]), ("reporting gap", data["reporting_gap_cells"])):
        if cells:
            gap = totals["gap" if name == "gap" else "reporting_gap"]
            parts += [
                Text(""),
                _heading(f"why the {name} is {figure(gap, sign=True)}"),
                _gap_table(cells, width),
            ]
    if data.get("rerun"):
        parts += [Text(""), _rerun(data["rerun"], run["run_id"], width)]
    return Group(*parts)


def _rerun(rerun: dict[str, Any], run_id: str, width: int) -> RenderableType:
    """What the rerun changed, and the command that shows which clients (never wrapped)."""
    changed = rerun["changed_keys"]
    what = (
        f"{figure(changed)} client{'s' * (changed != 1)} changed final outcome"
        if changed is not None
        else f"not compared: {rerun['note']}"
    )
    return Group(
        _wrap_items([f"rerun of {rerun['of']}", what], width),
        Text(f"see which: {rerun['command']}"),
    )


_TOTALS = (
    ("keys", "keys (anywhere in the run)"),
    ("entered", "entered (first stage)"),
    ("targeted", "targeted (in a final output)"),
    ("dropped", "dropped, reported"),
    ("dropped_unreported", "dropped, operational only"),
    ("orphaned", "orphaned (no reason anywhere)"),
    ("never_entered", "never entered (phantom drops only)"),
    ("residual", "residual"),
    ("traced", "traced (in any traceability)"),
    ("traced_reported", "traced in reported sources"),
    ("gap", "gap = entered - targeted - traced"),
    ("reporting_gap", "reporting gap (reported sources)"),
    ("null_key_rows", "rows with a null key"),
)
_BAD_TOTALS = {
    "orphaned",
    "dropped_unreported",
    "gap",
    "reporting_gap",
    "residual",
    "null_key_rows",
}


def _totals(t: dict[str, Any], width: int) -> Table:
    rows: list[list[Cell]] = []
    for name, label in _TOTALS:
        if name in t:
            style = _RED if t[name] and name in _BAD_TOTALS else ""
            rows.append([label, Text(figure(t[name]), style=style)])
    verdict = Text("yes", style="green") if t["reconciles"] else Text("NO", style=_RED)
    rows.append(["reconciles", verdict])
    return _table([_Col("what"), _fig("keys")], rows, width, show_header=False)


def cause_text(cause: dict[str, Any]) -> str:
    """`orphaned at exclusions`: how a cause is written, and what `--outcome/--stage` take."""
    if cause["stage"] is None:
        return "no cause"
    return f"{cause['outcome']} at {cause['stage']}"


def _gap_table(cells: list[dict[str, Any]], width: int) -> Table:
    """One row per (entered, targeted, traced) cell, then a row per cause under it (keys and
    contribution of each, so expected fan-in and defects are told apart); the flags go
    when room is short."""
    flags = ("entered", "targeted", "traced")
    rows: list[list[Cell]] = []
    for c in cells:
        rows.append(
            [
                c["cell"],
                *("yes" if c[f] else "no" for f in flags),
                figure(c["keys"]),
                figure(c["contribution"], sign=True),
                ", ".join(key_text(k) for k in c["sample"][:3]),
            ]
        )
        per_key = c["contribution"] // c["keys"] if c["keys"] else 0
        for cause in c.get("causes", []):
            style = _RED if cause["outcome"] in _BAD else "dim"
            rows.append(
                [
                    Text(f"  {cause_text(cause)}", style=style),
                    *("" for _ in flags),
                    Text(figure(cause["keys"]), style="dim"),
                    Text(figure(per_key * cause["keys"], sign=True), style="dim"),
                    "",
                ]
            )
    # The cell name is what `tracer gap-keys` takes, and it says the flags: keep it
    # whole and drop the flags before wrapping it.
    cols = [_name("cell"), *map(_name, flags), _fig("keys"), _fig("contribution"), _Col("e.g.")]
    if _needed(cols, rows) <= width:
        return _table(cols, rows, width)
    return _table([cols[0], *cols[4:]], [[r[0], *r[4:]] for r in rows], width)


# --- tracer journey ---------------------------------------------------------------------------


def _reasons(stage: dict[str, Any]) -> str:
    return "; ".join(
        f"{r['source']}: {r['reason']} ({figure(r['rows'])} row{'s' * (r['rows'] != 1)}"
        f"{'' if r['reported'] else ', not reported'})"
        for r in stage["reasons"]
    )


_DROPS = (("dropped", "rows_dropped_reported"), ("ops-only", "rows_dropped_operational"))


def journey(data: dict[str, Any], width: int = MIN_WIDTH) -> Group:
    """One client's stages: outcome, rows in, out and dropped, and the reasons given.

    The reasons get a column when they fit on one line, else a list under the table.
    """
    head = Text.assemble(
        ("client ", ""),
        (key_text(data["key"]), "bold"),
        (f" in run {data['run']['run_id']}: ", ""),
        (
            data["final_outcome"],
            "bold green" if data["final_outcome"] == "targeted" else _RED,
        ),
    )
    stages = data["stages"]
    summary = Text(data["summary"]) if data.get("summary") else None
    drops = [(header, field) for header, field in _DROPS if any(s[field] for s in stages)]
    cols = [_name("stage"), _name("outcome"), _fig("rows in"), _fig("rows out")]
    cols += [_fig(header) for header, _ in drops]
    rows: list[list[Cell]] = []
    for s in stages:
        bad = s["outcome"] in _BAD or s["grain_violation"]
        outcome = s["outcome"] + ("\n+ grain violation" if s["grain_violation"] else "")
        rows.append(
            [
                s["stage"],
                Text(outcome, style="red" if bad else ""),
                figure(s["rows_in"]),
                figure(s["rows_out"]),
                *(figure(s[field]) for _, field in drops),
            ]
        )
    reasons = [_reasons(s) for s in stages]
    with_reasons = [[*r, x] for r, x in zip(rows, reasons, strict=True)]
    parts: list[RenderableType] = [head, *([summary] if summary else [])]
    if _needed([*cols, _name("reasons")], with_reasons) <= width:
        parts.append(_table([*cols, _Col("reasons")], with_reasons, width))
    else:
        parts.append(_table(cols, rows, width))
        given = [f"  {s['stage']}: {x}" for s, x in zip(stages, reasons, strict=True) if x]
        if given:
            parts.append(Text("reasons:\n" + "\n".join(given)))
    if data["anomalies"]:
        met = ", ".join(f"{a['anomaly']} at {a['stage']}" for a in data["anomalies"])
        parts.append(Text(f"anomalies met: {met}", style="yellow"))
    return Group(*parts)


# --- tracer anomalies, tracer gap-keys, tracer history ------------------------------------


def _with_notes(
    cols: list[_Col],
    rows: list[list[Cell]],
    header: str,
    notes: list[str],
    names: list[str],
    width: int,
) -> list[RenderableType]:
    """The table with a `header` column of free text when each note fits on its row, else
    the notes listed under it (`name: note`): figures and names never give way to prose."""
    if not any(notes):
        return [_table(cols, rows, width)]
    wide = [[*row, note] for row, note in zip(rows, notes, strict=True)]
    if _needed([*cols, _name(header)], wide) <= width:
        return [_table([*cols, _Col(header)], wide, width)]
    listed = [f"  {name}: {note}" for name, note in zip(names, notes, strict=True) if note]
    return [_table(cols, rows, width), Text(f"{header}:\n" + "\n".join(listed))]


def reasons_text(reasons: list[dict[str, Any]]) -> str:
    """The reasons logged for a key at a stage, with their source and who sees them."""
    return "; ".join(
        f"{r['reason']} ({r['source']}{'' if r['reported'] else ', not reported'})" for r in reasons
    )


def _count_of(n: int, noun: str) -> str:
    return f"{figure(n)} {noun}{'s' * (n != 1)}"


def anomaly_list(data: dict[str, Any], width: int = MIN_WIDTH) -> Group:
    """The keys with one outcome, with their rows at that stage, final outcome and reasons."""
    where = f" at {data['stage']}" if data.get("stage") else ""
    total = f": {_count_of(data['total'], 'key')}" if "total" in data else ""
    head = _heading(f"{data['outcome']} in run {data['run']['run_id']}{where}{total}")
    if not data["items"]:
        return Group(head, Text("no keys"))
    cols = [_name("stage"), _name("key")]
    cols += [_fig(h) for h in ("rows in", "rows out", "rows dropped", "extra rows")]
    rows: list[list[Cell]] = [
        [
            item["stage"],
            key_text(item["key"]),
            *(figure(item[f]) for f in ("rows_in", "rows_out", "rows_dropped", "extra_rows")),
        ]
        for item in data["items"]
    ]
    notes = [_anomaly_note(item, data["outcome"]) for item in data["items"]]
    names = [key_text(item["key"]) for item in data["items"]]
    return Group(head, *_with_notes(cols, rows, "final outcome; reasons", notes, names, width))


def _anomaly_note(item: dict[str, Any], listed: str) -> str:
    """`orphaned; blocked (trace_buffer, not reported)`: the final outcome, then the reasons
    (after the key's outcome at the stage, on a list that is not of outcomes)."""
    parts = [] if item.get("outcome", listed) == listed else [f"{item['outcome']} here"]
    if "final_outcome" in item:
        parts.append(item["final_outcome"])
    if item.get("reasons"):
        parts.append(reasons_text(item["reasons"]))
    return "; ".join(parts)


def gap_keys(data: dict[str, Any], width: int = MIN_WIDTH) -> Group:
    """The keys of a gap cell, each with its cause, final outcome and the reasons there."""
    which = "reporting gap" if data["reporting"] else "gap"
    cause = [data[f] for f in ("outcome", "stage") if data.get(f)]
    only = f" ({' at '.join(cause)})" if cause else ""
    head = _heading(
        f"{data['cell']}{only} of the {which} of run {data['run']['run_id']}: "
        + _count_of(data["total"], "key")
    )
    if not data["items"]:
        return Group(head, Text("no keys"))
    cols = [_name("key"), _name("cause"), _name("final outcome")]
    rows: list[list[Cell]] = [
        [key_text(i["key"]), cause_text(i), i["final_outcome"]] for i in data["items"]
    ]
    notes = [reasons_text(i["reasons"]) for i in data["items"]]
    names = [key_text(i["key"]) for i in data["items"]]
    return Group(head, *_with_notes(cols, rows, "reasons", notes, names, width))


def _classified(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _left(left: dict[str, str] | None) -> str:
    return f"{left['outcome']} at {left['stage']}" if left else ""


def history(data: dict[str, Any], width: int = MIN_WIDTH) -> Group:
    """Every run the client appears in, newest first, with its final outcome there and
    where it left. Where it left and the run labels get a column when they fit on one
    line, else a list under the table."""
    items = data["items"]
    runs = [item["run"] for item in items]
    key = key_text(items[0]["key"]) if items else ""
    count = f"{figure(len(items))} run{'s' * (len(items) != 1)}"
    head = _heading(f"client {key} in " + (f"the newest {count}" if data.get("next") else count))
    cols = [_name("run"), _name("pipeline"), _name("final outcome"), _name("classified (UTC)")]
    reruns = any(r.get("rerun_of") for r in runs)
    cols += [_name("rerun of")] if reruns else []
    rows: list[list[Cell]] = []
    for r, item in zip(runs, items, strict=True):
        final = item["final_outcome"]
        rows.append(
            [
                r["run_id"],
                r["pipeline"],
                Text(final, style="green" if final == "targeted" else "red"),
                _classified(r.get("classified_at")),
                *([r.get("rerun_of") or ""] if reruns else []),
            ]
        )
    left = [_left(item.get("left_at")) for item in items]
    if any(left):
        wide = [[*row, x] for row, x in zip(rows, left, strict=True)]
        if _needed([*cols, _name("left at")], wide) <= width:
            cols, rows, left = [*cols, _name("left at")], wide, []
    labels = [r.get("label") or "" for r in runs]
    names = [r["run_id"] for r in runs]
    parts = _with_notes(cols, rows, "label", labels, names, width)
    if any(left):
        listed = [f"  {n}: {x}" for n, x in zip(names, left, strict=True) if x]
        parts.append(Text("left at:\n" + "\n".join(listed)))
    return Group(head, *parts)


# --- tracer compare ------------------------------------------------------------------------


def comparison(data: dict[str, Any], width: int = MIN_WIDTH) -> Group:
    """The matrix of final outcomes, where changed clients first differ, and the change in
    keys per stage and outcome (B - A)."""
    a, b = data["run_a"], data["run_b"]
    changed = data["changed_keys"]
    head = _heading(f"run {a} vs run {b}: {_count_of(changed, 'client')} changed final outcome")
    cols = [_name("final in A"), _name("final in B"), _fig("keys")]
    rows: list[list[Cell]] = [
        [
            Text(m["a"], style="bold" if m["a"] != m["b"] else ""),
            Text(m["b"], style="bold" if m["a"] != m["b"] else ""),
            figure(m["keys"]),
        ]
        for m in data["matrix"]
    ]
    parts: list[RenderableType] = [head, Text(f"A = {a}, B = {b}", style="italic")]
    parts.append(_table(cols, rows, width))
    firsts = [f"{f['stage']} {figure(f['keys'])}" for f in data["first_differences"] if f["keys"]]
    if firsts:
        parts.append(_wrap_items(firsts, width, "changed clients first differ at: "))
    lines = [
        _Line(o, [s["outcomes"][o]["delta"] for s in data["stages"]], _RED if o in _BAD else "",
              sign=True)
        for o in (data["stages"][0]["outcomes"] if data["stages"] else [])
    ]  # fmt: skip
    lines = [x for x in lines if any(x.values)]
    if lines:
        parts += [Text(""), _heading("change per stage (B - A, distinct keys)")]
        parts += _grid([lines], [s["stage"] for s in data["stages"]], width)
    if changed:
        parts.append(Text(f"\nthe keys of a cell: tracer compare {a} {b} --cell A_FINAL B_FINAL"))
    return Group(*parts)


def compare_keys(data: dict[str, Any], width: int = MIN_WIDTH) -> Group:
    """The keys of one cell of a comparison, each with the first stage where it differs."""
    head = _heading(
        f"{data['a']} in {data['run_a']}, {data['b']} in {data['run_b']}: "
        + _count_of(data["total"], "key")
    )
    if not data["items"]:
        return Group(head, Text("no keys"))
    cols = [_name("key"), _name("first differs at"), _name("in A"), _name("in B")]
    rows: list[list[Cell]] = []
    for item in data["items"]:
        first = item["first_difference"] or {"stage": "(nowhere)", "a": "", "b": ""}
        rows.append([key_text(item["key"]), first["stage"], first["a"], first["b"]])
    return Group(head, _table(cols, rows, width))


# --- tracer runs, tracer pipelines, tracer jobs -------------------------------------------

_SURVEY = (
    ("entered", "entered"),
    ("targeted", "targeted"),
    ("traced", "traced"),
    ("gap", "gap"),
    ("reporting_gap", "rep. gap"),
    ("distance", "distance"),
)


def runs(data: dict[str, Any], width: int = MIN_WIDTH) -> Group:
    """Runs with their headline figures, and why each does not reconcile. One row per run
    when the figures fit, else one block per run."""
    items = data["items"]
    if not items:
        return Group(Text("no runs"))
    cols = [_name("run"), _name("pipeline"), *(_fig(h) for _, h in _SURVEY)]
    rows: list[list[Cell]] = []
    notes = []
    for item in items:
        f = item["figures"]
        signed = {"gap", "reporting_gap"}
        values = [figure(f[n], sign=n in signed and f[n] != 0) if f else "" for n, _ in _SURVEY]
        rows.append([item["run_id"], item["pipeline"], *values])
        notes.append(_verdict(item))
    if _needed(cols, rows) <= width:
        return Group(*_with_notes(cols, rows, "why not", notes, [i["run_id"] for i in items],
                                  width))  # fmt: skip
    blocks: list[RenderableType] = []
    for item, row, note in zip(items, rows, notes, strict=True):
        pairs = [[h, row[2 + i]] for i, (_, h) in enumerate(_SURVEY)]
        blocks += [
            _heading(f"{item['run_id']} · {item['pipeline']}"),
            _table([_Col("what"), _fig("keys")], pairs, width, show_header=False),
            Text(note),
            Text(""),
        ]
    return Group(*blocks)


def _verdict(item: dict[str, Any]) -> str:
    f = item["figures"]
    if f is None:
        return f"not classified ({item['status']})"
    return "reconciles" if f["reconciles"] else "; ".join(f["failed_conditions"])


def pipelines(data: dict[str, Any], width: int = MIN_WIDTH) -> Group:
    """Registered pipelines: key, stages, runs and the last run."""
    items = data["items"]
    if not items:
        return Group(Text("no pipelines"))
    cols = [_name("pipeline"), _name("key"), _fig("stages"), _fig("runs"), _name("last run (UTC)")]
    rows: list[list[Cell]] = [
        [
            p["name"],
            ", ".join(p["key"]),
            figure(len(p["stages"])),
            figure(p["runs"]),
            _classified(p.get("last_run_at")),
        ]
        for p in items
    ]
    notes = [" > ".join(p["stages"]) for p in items]
    return Group(*_with_notes(cols, rows, "stages", notes, [p["name"] for p in items], width))


def jobs(data: dict[str, Any], width: int = MIN_WIDTH) -> Group:
    """The run's jobs: one per dataset and the classification, with their status."""
    head = _heading(f"jobs of run {data['run']['run_id']} ({data['run']['status']})")
    cols = [_name("job"), _name("for"), _name("status")]
    rows: list[list[Cell]] = []
    for j in data["jobs"]:
        bad = j["status"] in ("failed", "missing")
        rows.append([j["id"], j["for"], Text(j["status"], style=_RED if bad else "")])
    errors_ = [j.get("error") or "" for j in data["jobs"]]
    return Group(head, *_with_notes(cols, rows, "error", errors_, [j["id"] for j in data["jobs"]],
                                    width))  # fmt: skip
