"""What every query needs first: the run, its key and its stages, from the stored layout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from tracer import keys as keymod
from tracer.errors import NotFoundError, TracerError
from tracer.model import RunLayout, RunStatus
from tracer.tables import pipelines, runs


@dataclass(frozen=True)
class RunInfo:
    pk: int
    run_id: str
    pipeline: str
    label: str | None
    rerun_of: str | None
    status: RunStatus
    classified_at: Any
    layout: RunLayout
    row: Any

    @property
    def key(self) -> tuple[str, ...]:
        return self.layout.key

    @property
    def key_types(self) -> tuple[str, ...]:
        return self.layout.key_types

    @property
    def stages(self) -> tuple[str, ...]:
        return self.layout.stages

    def encode_key(self, values: Sequence[object]) -> str:
        try:
            return keymod.encode(values, self.key_types, self.key)
        except ValueError as exc:
            raise TracerError(str(exc)) from None

    def decode_key(self, text: str) -> dict[str, object]:
        return keymod.decode(text, self.key_types, self.key)

    def header(self) -> dict[str, Any]:
        return run_header(self.row)


def run_columns(summary: bool = False) -> list[Any]:
    """The run's columns a query reads: never the manifest, the totals only on request."""
    skipped = ("manifest",) if summary else ("manifest", "totals", "gap_cells")
    return [c for c in runs.c if c.name not in skipped]


def iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def parse_time(text: str) -> datetime:
    """A timestamp `iso` wrote (pagination tokens carry them)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise TracerError(f"invalid pagination token: {text[:40]!r} is not a time") from None


def run_header(row: Any) -> dict[str, Any]:
    """A run as every answer shows it (`run` in journeys, pages, reconciliations, lists)."""
    return {
        "run_id": row.run_id,
        "pipeline": row.pipeline_name,
        "label": row.label,
        "rerun_of": row.rerun_of,
        "status": row.status,
        "error": row.error,
        "created_at": iso(row.created_at),
        "classified_at": iso(row.classified_at),
    }


def load_run(
    conn: Connection, run_id: str, classified: bool = True, summary: bool = False
) -> RunInfo:
    """The run as queries need it; its totals and gap cells (kilobytes of JSON) on request.

    Answers come from the run's published classification (docs/semantics.md#publishing):
    a re-ingest in progress, or one that failed, leaves the last one readable, and the
    run's `status` (of the latest attempt) next to `classified_at` says so.
    """
    row = conn.execute(
        select(*run_columns(summary), pipelines.c.name.label("pipeline_name"))
        .join(pipelines, pipelines.c.id == runs.c.pipeline_id)
        .where(runs.c.run_id == run_id)
    ).first()
    if row is None:
        raise NotFoundError(f"run {run_id!r} not found")
    if classified and row.classified_at is None:
        raise TracerError(f"run {run_id!r} is {row.status}, not classified yet")
    return run_info(row)


def run_info(row: Any) -> RunInfo:
    return RunInfo(
        pk=row.pk,
        run_id=row.run_id,
        pipeline=row.pipeline_name,
        label=row.label,
        rerun_of=row.rerun_of,
        status=RunStatus(row.status),
        classified_at=row.classified_at,
        layout=RunLayout.from_json(row.layout),
        row=row,
    )
