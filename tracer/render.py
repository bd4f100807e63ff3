"""Human-readable tables for the CLI (the JSON shapes are the query results themselves)."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from tracer.outcomes import RUN_BREAKERS

# Columns of the per-stage reconciliation, in the order lineage-semantics.md lists them:
# (header, outcome label or None for a computed column).
_STAGE_COLUMNS = (
    ("in", None),
    ("out", None),
    ("dropped", "dropped"),
    ("ops-only", "dropped_unreported"),
    ("partial", "partially_dropped"),
    ("orphaned", "orphaned"),
    ("multiplied", "multiplied"),
    ("expanded", "expanded"),
    ("collapsed", "collapsed"),
    ("appeared", "appeared"),
    ("conflict", "conflict"),
    ("phantom", "phantom_drop"),
    ("grain viol", None),
    ("null key", None),
    ("dup rows", None),
)
_BAD = {o.label for o in RUN_BREAKERS}


def key_text(key: dict[str, object]) -> str:
    return "|".join(str(v) for v in key.values())


def _cell(value: int, bad: bool = False) -> Text:
    if not value:
        return Text("·", style="dim")
    return Text(f"{value:,}", style="bold red" if bad else "")


def _stage_cells(s: dict[str, Any]) -> list[Text]:
    o, rows, flags = s["outcomes"], s["rows"], s["flags"]
    cells = [Text(f"{s['totals']['keys_in'] or o['entered']:,}"), _cell(s["totals"]["keys_out"])]
    for _, label in _STAGE_COLUMNS[2:12]:
        assert label is not None
        cell = _cell(o[label], label in _BAD)
        if label == "multiplied" and o[label]:
            cell.append(f" +{rows['multiplied']['out'] - rows['multiplied']['in']:,}r")
        cells.append(cell)
    cells.append(_cell(flags["grain_violation"], True))
    cells.append(_cell(flags["null_key"]["total"], True))
    cells.append(_cell(flags["duplicate_rows"], True))
    return cells


def report(data: dict[str, Any]) -> Group:
    """Keys per stage and outcome; columns that are zero at every stage are left out."""
    run, totals = data["run"], data["totals"]
    title = f"run {run['run_id']} · pipeline {run['pipeline']}" + (
        f" · {run['label']}" if run.get("label") else ""
    )
    rows = [(s["stage"], _stage_cells(s)) for s in data["stages"]]
    keep = [
        i for i in range(len(_STAGE_COLUMNS)) if i < 2 or any(r[1][i].plain != "·" for r in rows)
    ]
    stages = Table(title=title + " · distinct keys per stage", title_justify="left")
    stages.add_column("stage", no_wrap=True)
    for i in keep:
        stages.add_column(_STAGE_COLUMNS[i][0], justify="right")
    for name, cells in rows:
        stages.add_row(name, *(cells[i] for i in keep))
    parts: list[Any] = [stages]
    drift = [
        f"  {s['stage']}: lost {'' if c['role'] == 'column' else c['role'] + ' '}column "
        f"{c['column']!r} (present in {c['parent']})"
        for s in data["stages"]
        for c in s["flags"]["dropped_columns"]
    ]
    if drift:
        parts.append(Text("schema drift:\n" + "\n".join(drift), style="yellow"))
    parts.append(_totals(totals))
    for title, cells in (
        ("gap", data["gap_cells"]),
        ("reporting gap", data["reporting_gap_cells"]),
    ):
        if cells:
            parts.append(_gap_table(title, totals, cells))
    return Group(*parts)


_TOTALS = (
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
)


def _totals(t: dict[str, Any]) -> Table:
    table = Table(title="run totals (distinct keys)", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("keys", justify="right")
    for name, label in _TOTALS:
        value = t[name]
        bad = name in ("orphaned", "dropped_unreported", "gap", "reporting_gap", "residual")
        table.add_row(label, _cell(value, bad) if value else Text("0"))
    verdict = Text("yes", style="green") if t["reconciles"] else Text("NO", style="bold red")
    table.add_row("reconciles", verdict)
    return table


def _gap_table(title: str, totals: dict[str, Any], cells: list[dict[str, Any]]) -> Table:
    gap = totals["gap" if title == "gap" else "reporting_gap"]
    table = Table(
        title=f"why the {title} is {gap:+,}: keys by (entered, targeted, traced)",
        title_justify="left",
    )
    for name in ("cell", "entered", "targeted", "traced", "keys", "contribution", "e.g."):
        table.add_column(name, justify="right" if name in ("keys", "contribution") else "left")
    for c in cells:
        table.add_row(
            c["cell"],
            "yes" if c["entered"] else "no",
            "yes" if c["targeted"] else "no",
            "yes" if c["traced"] else "no",
            f"{c['keys']:,}",
            f"{c['contribution']:+,}",
            ", ".join(key_text(k) for k in c["sample"][:3]),
        )
    return table


def journey(data: dict[str, Any]) -> Group:
    head = Text.assemble(
        ("client ", ""),
        (key_text(data["key"]), "bold"),
        (f" in run {data['run']}: ", ""),
        (
            data["final_outcome"],
            "bold green" if data["final_outcome"] == "targeted" else "bold red",
        ),
    )
    table = Table(show_header=True)
    for name in ("stage", "outcome", "rows in", "rows out", "reasons"):
        table.add_column(name, justify="right" if name.startswith("rows") else "left")
    for s in data["stages"]:
        reasons = "; ".join(
            f"{r['source']}: {r['reason']} ({r['rows']} row{'s' * (r['rows'] != 1)}"
            f"{'' if r['reported'] else ', not reported'})"
            for r in s["reasons"]
        )
        outcome = s["outcome"] + (" + grain violation" if s["grain_violation"] else "")
        table.add_row(
            s["stage"],
            Text(outcome, style="red" if s["outcome"] in _BAD or s["grain_violation"] else ""),
            str(s["rows_in"]),
            str(s["rows_out"]),
            reasons,
        )
    parts: list[Any] = [head, table]
    if data["anomalies"]:
        met = ", ".join(f"{a['anomaly']} at {a['stage']}" for a in data["anomalies"])
        parts.append(Text(f"anomalies met: {met}", style="yellow"))
    return Group(*parts)


def anomaly_list(data: dict[str, Any]) -> Table:
    table = Table(title=f"{data['outcome']} in run {data['run']}", title_justify="left")
    for name in ("stage", "key", "rows in", "rows out", "rows dropped", "extra rows"):
        table.add_column(name, justify="left" if name in ("stage", "key") else "right")
    for item in data["items"]:
        table.add_row(
            item["stage"],
            key_text(item["key"]),
            str(item["rows_in"]),
            str(item["rows_out"]),
            str(item["rows_drop"]),
            str(item["extra_rows"]),
        )
    return table
