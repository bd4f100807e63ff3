"""The domain: pipelines, stages, traceability sources, a run's datasets and its layout.

Apart from parsing (tracer.manifest builds these from a manifest) so that
ingestion, classification and the read side share one typed vocabulary and
nobody reads a validated run back from an untyped dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from tracer.graph import StageGraph
from tracer.sources import open_dataset


class RunStatus(StrEnum):
    QUEUED = "queued"  # submitted to the workers, not yet picked up
    INGESTING = "ingesting"  # datasets loading in this process
    CLASSIFIED = "classified"  # every answer is available
    FAILED = "failed"  # see the run's error


class DatasetStatus(StrEnum):
    PENDING = "pending"
    INGESTED = "ingested"
    FAILED = "failed"


class DatasetRole(StrEnum):
    OUTPUT = "output"  # a stage's output: the rows that continue
    TRACEABILITY = "traceability"  # rows filtered out, with a stage and a reason


@dataclass(frozen=True)
class Stage:
    name: str
    index: int  # position in pipeline order
    parents: tuple[str, ...]
    children: tuple[str, ...]
    grain: tuple[str, ...]
    fanout_expected: bool
    split_route: bool


@dataclass(frozen=True)
class TraceSource:
    """A traceability dataset of the pipeline; `reported` sources feed the dashboards."""

    name: str
    reported: bool
    stage: str | None  # the stage every row is attributed to, or
    stage_column: str | None  # the column naming it per row
    reason_column: str | None


@dataclass(frozen=True)
class Pipeline:
    name: str
    key: tuple[str, ...]
    key_types: tuple[str, ...]
    stages: tuple[Stage, ...]
    traceability: tuple[TraceSource, ...]
    graph: StageGraph
    spec: dict[str, Any]  # the pipeline as registered, normalised

    def stage(self, name: str) -> Stage:
        return self.stages[self.graph.index[name]]


@dataclass(frozen=True)
class _DatasetBase:
    name: str
    uri: str
    field: str  # the manifest field naming it, for error messages
    key_columns: tuple[str, ...]  # the lineage key's columns as named in this dataset
    schema: pa.Schema

    def open(self) -> ds.Dataset:
        return open_dataset(self.uri)


@dataclass(frozen=True)
class StageOutput(_DatasetBase):
    stage: Stage
    role = DatasetRole.OUTPUT


@dataclass(frozen=True)
class TraceDataset(_DatasetBase):
    source: TraceSource
    role = DatasetRole.TRACEABILITY


Dataset = StageOutput | TraceDataset


@dataclass(frozen=True)
class RunLayout:
    """What the read side needs of a run's pipeline, decided once at validation."""

    key: tuple[str, ...]
    key_types: tuple[str, ...]
    stages: tuple[str, ...]  # pipeline order
    finals: tuple[str, ...]  # stages with no children
    reported: dict[str, bool]  # traceability source -> feeds reporting

    def to_json(self) -> dict[str, Any]:
        return {
            "key": list(self.key),
            "key_types": list(self.key_types),
            "stages": list(self.stages),
            "finals": list(self.finals),
            "reported": dict(self.reported),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunLayout:
        return cls(
            key=tuple(data["key"]),
            key_types=tuple(data["key_types"]),
            stages=tuple(data["stages"]),
            finals=tuple(data["finals"]),
            reported=dict(data["reported"]),
        )

    @classmethod
    def of(cls, pipeline: Pipeline) -> RunLayout:
        return cls(
            key=pipeline.key,
            key_types=pipeline.key_types,
            stages=pipeline.graph.order,
            finals=pipeline.graph.finals,
            reported={t.name: t.reported for t in pipeline.traceability},
        )


@dataclass(frozen=True)
class Manifest:
    """A validated run submission: the pipeline, the run and every dataset, opened."""

    pipeline: Pipeline
    run_id: str
    label: str | None
    rerun_of: str | None
    datasets: tuple[Dataset, ...]
    document: dict[str, Any]  # the manifest as stored: pipeline spec, run, resolved paths

    @property
    def layout(self) -> RunLayout:
        return RunLayout.of(self.pipeline)
