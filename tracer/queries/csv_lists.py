"""Every list as CSV, the same from the API (`format=csv`) and the CLI (`--csv`): a header
row always, an empty list too, then one row per item of every page (or batch of a batch
lookup), in list order."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from tracer.outcomes import RUN_BREAKERS


def reasons_text(reasons: list[dict[str, Any]]) -> str:
    """`trace_main: credit_default (1 row, reported); ...`: a cell a spreadsheet shows whole."""
    return "; ".join(
        f"{r['source']}: {r['reason']} ({r['rows']} row{'s' * (r['rows'] != 1)}, "
        f"{'reported' if r['reported'] else 'not reported'})"
        for r in reasons
    )


def _anomaly(item: dict[str, Any]) -> list[Any]:
    figures = [item[f] for f in ("rows_in", "rows_out", "rows_dropped", "extra_rows")]
    return [item["stage"], *item["key"].values(), *figures, item["outcome"],
            item["final_outcome"], reasons_text(item["reasons"])]  # fmt: skip


def _gap_key(item: dict[str, Any]) -> list[Any]:
    return [*item["key"].values(), item["stage"], item["outcome"], item["final_outcome"],
            reasons_text(item["reasons"])]  # fmt: skip


def _lookup(item: dict[str, Any]) -> list[Any]:
    where = item["left_at"] or {}
    return [*item["key"].values(), item["final_outcome"], where.get("stage"),
            where.get("outcome"), reasons_text(item["reasons"])]  # fmt: skip


def _compare_key(item: dict[str, Any]) -> list[Any]:
    first = item["first_difference"] or {}
    return [*item["key"].values(), item["a"], item["b"],
            first.get("stage"), first.get("a"), first.get("b")]  # fmt: skip


_FIGURES = ("entered", "targeted", "traced", "traced_reported", "gap", "reporting_gap",
            "null_key_rows")  # fmt: skip
_BREAKERS = tuple(o.label for o in RUN_BREAKERS)
_RUN = ("run_id", "pipeline", "label", "rerun_of", "status", "created_at", "classified_at")


def _run(item: dict[str, Any]) -> list[Any]:
    f = item["figures"]
    if f is None:
        return [*(item[c] for c in _RUN), *[None] * (len(_FIGURES) + len(_BREAKERS) + 3)]
    return [*(item[c] for c in _RUN), *(f[c] for c in _FIGURES),
            *(f["anomalies"][b] for b in _BREAKERS), f["reconciles"], f["distance"],
            "; ".join(f["failed_conditions"])]  # fmt: skip


_HEADERS: dict[str, tuple[list[str], list[str]]] = {
    "anomalies": (
        ["stage"],
        ["rows_in", "rows_out", "rows_dropped", "extra_rows", "outcome", "final_outcome",
         "reasons"],
    ),
    "gap_keys": ([], ["stage", "outcome", "final_outcome", "reasons"]),
    "lookup": ([], ["final_outcome", "left_stage", "left_outcome", "reasons"]),
    "compare_keys": (
        [], ["a", "b", "first_difference_stage", "first_difference_a", "first_difference_b"]
    ),
    "runs": (
        [*_RUN, *_FIGURES, *_BREAKERS, "reconciles", "distance", "failed_conditions"], []
    ),
}  # fmt: skip
"""List name -> the columns before and after the key's (a run list has no key)."""
_ROWS: dict[str, Callable[[dict[str, Any]], list[Any]]] = {
    "anomalies": _anomaly,
    "gap_keys": _gap_key,
    "lookup": _lookup,
    "compare_keys": _compare_key,
    "runs": _run,
}


def header(kind: str, key_columns: Sequence[str]) -> list[str]:
    before, after = _HEADERS[kind]
    return [*before, *key_columns, *after]


def csv_chunks(
    kind: str, key_columns: Sequence[str], pages: Iterable[dict[str, Any]]
) -> Iterator[str]:
    """The header, then each page's rows: one chunk of CSV text per page (for streaming)."""
    row = _ROWS[kind]
    buffer = io.StringIO()
    out = csv.writer(buffer)
    out.writerow(header(kind, key_columns))
    for page in pages:
        for item in page["items"]:
            out.writerow(row(item))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():  # no page at all: the header alone
        yield buffer.getvalue()


def every_page(fetch: Callable[[str | None], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Each page of a list in turn, following `next` until the last."""
    token = None
    while True:
        page = fetch(token)
        yield page
        if (token := page["next"]) is None:
            return
