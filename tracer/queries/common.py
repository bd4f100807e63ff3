"""What every query needs first: the run, its key and its stages, from the stored layout."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
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
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "label": self.label,
            "rerun_of": self.rerun_of,
            "status": self.status,
            "classified_at": self.classified_at.isoformat() if self.classified_at else None,
        }


def load_run(
    conn: Connection, run_id: str, classified: bool = True, summary: bool = False
) -> RunInfo:
    """The run as queries need it; its totals and gap cells (kilobytes of JSON) on request."""
    skipped = ("manifest",) if summary else ("manifest", "totals", "gap_cells")
    columns = [c for c in runs.c if c.name not in skipped]
    row = conn.execute(
        select(*columns, pipelines.c.name.label("pipeline_name"))
        .join(pipelines, pipelines.c.id == runs.c.pipeline_id)
        .where(runs.c.run_id == run_id)
    ).first()
    if row is None:
        raise NotFoundError(f"run {run_id!r} not found")
    if classified and row.status != RunStatus.CLASSIFIED:
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


def encode_token(values: Sequence[object]) -> str:
    """An opaque keyset cursor: the sort key of the last item returned."""
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


def decode_token(token: str) -> list[Any]:
    try:
        padded = token + "=" * (-len(token) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError):
        raise TracerError(f"invalid pagination token {token!r}") from None
    if not isinstance(values, list):
        raise TracerError(f"invalid pagination token {token!r}")
    return values
