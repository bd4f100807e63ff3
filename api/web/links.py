"""Where the pages point, and how they write numbers: one place for both, shared by every
template through the blueprint's context."""

from __future__ import annotations

from typing import Any

from flask import url_for

from api.web import words


def journey_url(run_id: str, key: dict[str, Any]) -> str:
    """A client's journey page: `/runs/R/clients/42`, or `?key=LIS&key=42` for a composite key
    (or a value with a slash, which a path segment cannot hold)."""
    values = [str(v) for v in key.values()]
    if len(values) == 1 and "/" not in values[0]:
        return url_for("web.client", run_id=run_id, key=values[0])
    return url_for("web.client_by_values", run_id=run_id, key=values)


def anomalies_url(run_id: str, outcome: str | None = None, stage: str | None = None) -> str:
    return url_for("web.anomalies", run_id=run_id, outcome=outcome, stage=stage)


def gap_keys_url(
    run_id: str,
    cell: str,
    reporting: bool,
    stage: str | None = None,
    outcome: str | None = None,
) -> str:
    """The keys of a gap cell, or of one of its causes (the stage and outcome it left at)."""
    return url_for(
        "web.gap_keys",
        run_id=run_id,
        cell=cell,
        reporting=1 if reporting else None,
        stage=stage,
        outcome=outcome,
    )


def figure(value: Any, sign: bool = False) -> str:
    """Every count as the CLI writes it: thousands separated, signed where it is a difference."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:+,}" if sign else f"{value:,}"


def yes_no(value: Any) -> str:
    return "yes" if value else "no"


def detail(value: Any) -> str:
    """A field another engineer may add to a query's items (a cause, reasons), in words."""
    if isinstance(value, dict):
        if "outcome" in value and "stage" in value:
            return f"{words.NAME.get(value['outcome'], value['outcome'])} at {value['stage']}"
        return ", ".join(f"{k} {detail(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(detail(v) for v in value)
    return figure(value)


def template_context() -> dict[str, Any]:
    return {
        "journey_url": journey_url,
        "anomalies_url": anomalies_url,
        "gap_keys_url": gap_keys_url,
        "figure": figure,
        "yes_no": yes_no,
        "detail": detail,
        "words": words,
    }
