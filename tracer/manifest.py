"""The run manifest: load YAML or JSON, validate it, and open every dataset it names.

Parsing and validation only: what it builds is the domain of tracer.model.

Validation reads each dataset's schema (Parquet footers only), so a missing
path, a missing key column or a key column of the wrong type is refused before
anything is written. Every problem found is reported at once, each naming the
manifest field, file or column at fault.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tracer import keys as keymod
from tracer.errors import ManifestError
from tracer.graph import StageGraph, build_graph
from tracer.model import (
    Dataset,
    DatasetRole,
    Manifest,
    Pipeline,
    Stage,
    StageOutput,
    TraceDataset,
    TraceSource,
)
from tracer.openlineage_mapping import OpenLineageJob, omit_unmapped
from tracer.sources import glob_base, open_dataset, resolve_path


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class StageSpec(_Model):
    name: str = Field(min_length=1)
    parents: list[str] | None = None
    grain: list[str] | None = None
    fanout: Literal["none", "expected"] = "none"
    split: Literal["copy", "route"] = "copy"
    columns: dict[str, str] = Field(default_factory=dict)
    openlineage: OpenLineageJob | None = None  # the job whose output this is (openlineage_in)

    _lists = field_validator("grain", "parents", mode="before")(_as_list)
    _unmapped = omit_unmapped


class TraceSpec(_Model):
    name: str = Field(min_length=1)
    reported: bool
    stage: str | None = None
    stage_column: str | None = None
    reason_column: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    openlineage: OpenLineageJob | None = None  # the job whose output this is (openlineage_in)

    _unmapped = omit_unmapped


class PipelineSpec(_Model):
    name: str = Field(min_length=1)
    key: list[str] = Field(min_length=1)
    key_types: dict[str, Literal["int64", "string"]] = Field(default_factory=dict)
    stages: list[StageSpec] = Field(min_length=1)
    traceability: list[TraceSpec] = Field(default_factory=list)

    _key = field_validator("key", mode="before")(_as_list)


class RunSpec(_Model):
    id: str = Field(min_length=1, max_length=200)
    label: str | None = None
    rerun_of: str | None = None
    outputs: dict[str, str]
    traceability: dict[str, str] = Field(default_factory=dict)


class ManifestSpec(_Model):
    pipeline: PipelineSpec | str
    run: RunSpec


PipelineLookup = Callable[[str], Mapping[str, Any]]


def load_manifest(path: str | Path, lookup: PipelineLookup | None = None) -> Manifest:
    """Read and validate the manifest file at `path`; relative paths are from its folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    return parse_manifest(text, base_dir=path.resolve().parent, source=str(path), lookup=lookup)


def parse_manifest(
    text: str | Mapping[str, Any],
    base_dir: Path,
    source: str = "<manifest>",
    lookup: PipelineLookup | None = None,
    roots: Sequence[Path] | None = None,
) -> Manifest:
    """Validate a manifest given as YAML/JSON text or an already parsed mapping.

    With `roots`, every path (after resolving `..` and symlinks, and every file a
    directory or glob holds) must lie under one of them: a server reads nothing else.
    """
    raw = _parse_text(text, source) if isinstance(text, str) else dict(text)
    try:
        spec = ManifestSpec.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(
            f"{source}: invalid manifest", [_pydantic_message(e) for e in exc.errors()]
        ) from None
    pipeline_spec = spec.pipeline
    if isinstance(pipeline_spec, str):
        if lookup is None:
            raise ManifestError(
                f"{source}: pipeline {pipeline_spec!r} named, but no registry given"
            )
        try:
            pipeline_spec = PipelineSpec.model_validate(lookup(pipeline_spec))
        except KeyError:
            raise ManifestError(
                f"{source}: pipeline: no registered pipeline named {pipeline_spec!r}"
            ) from None
    return _Validator(pipeline_spec, spec.run, base_dir, source, roots).manifest()


def _parse_text(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{source}: not valid YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: a manifest is a mapping with 'pipeline' and 'run'")
    return data


def _pydantic_message(error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"] if p not in ("PipelineSpec",))
    return f"{where}: {error['msg']}"


class _Validator:
    """Collects every problem of one manifest, then raises them together."""

    def __init__(
        self,
        pipeline: PipelineSpec,
        run: RunSpec,
        base_dir: Path,
        source: str,
        roots: Sequence[Path] | None,
    ) -> None:
        self.p = pipeline
        self.run = run
        self.base_dir = base_dir
        self.source = source
        self.roots = None if roots is None else [Path(os.path.realpath(r)) for r in roots]
        self.errors: list[str] = []

    def fail(self, message: str) -> None:
        self.errors.append(message)

    def raise_if_failed(self) -> None:
        if self.errors:
            count = len(self.errors)
            head = self.errors[0] if count == 1 else f"{count} problems"
            raise ManifestError(f"{self.source}: {head}", list(self.errors))

    def manifest(self) -> Manifest:
        self.check_key()
        graph = build_graph(
            [(s.name, s.parents) for s in self.p.stages], self.fail, field="pipeline.stages"
        )
        self.raise_if_failed()
        assert graph is not None
        stages = self.stages(graph)
        sources = self.sources(stages)
        self.raise_if_failed()
        datasets = self.datasets(stages, sources)
        self.raise_if_failed()
        key_types = self.key_types(datasets)
        self.raise_if_failed()
        pipeline = Pipeline(
            name=self.p.name,
            key=tuple(self.p.key),
            key_types=tuple(key_types),
            stages=tuple(stages),
            traceability=tuple(sources),
            graph=graph,
            spec=self.p.model_dump(mode="json"),
        )
        run = self.run.model_dump(mode="json")
        # Paths as resolved, so a worker anywhere re-validates the same files.
        uris = {(d.role, d.name): d.uri for d in datasets}
        for role, names in (
            (DatasetRole.OUTPUT, "outputs"),
            (DatasetRole.TRACEABILITY, "traceability"),
        ):
            run[names] = {n: uris[(role, n)] for n in run[names]}
        return Manifest(
            pipeline=pipeline,
            run_id=self.run.id,
            label=self.run.label,
            rerun_of=self.run.rerun_of,
            datasets=tuple(datasets),
            document={"pipeline": pipeline.spec, "run": run},
        )

    def check_key(self) -> None:
        key = self.p.key
        if len(set(key)) != len(key):
            self.fail(f"pipeline.key: a column is named twice in {key}")
        for column in self.p.key_types:
            if column not in key:
                self.fail(f"pipeline.key_types.{column}: not a column of the key {key}")

    def stages(self, graph: StageGraph) -> list[Stage]:
        by_name = {s.name: s for s in self.p.stages}
        stages: list[Stage] = []
        for index, name in enumerate(graph.order):
            s = by_name[name]
            at = f"pipeline.stages[{name}]"
            if s.fanout == "expected" and not s.grain:
                self.fail(f"{at}.fanout: 'expected' needs a grain to check rows are distinct")
            for column in s.columns:
                if column not in self.p.key:
                    self.fail(f"{at}.columns.{column}: not a column of the key {self.p.key}")
            stages.append(
                Stage(
                    name=name,
                    index=index,
                    parents=graph.parents[name],
                    children=graph.children[name],
                    grain=tuple(s.grain or self.p.key),
                    fanout_expected=s.fanout == "expected",
                    split_route=s.split == "route",
                )
            )
        return stages

    def sources(self, stages: list[Stage]) -> list[TraceSource]:
        names = {s.name for s in stages}
        seen: set[str] = set()
        out: list[TraceSource] = []
        for t in self.p.traceability:
            at = f"pipeline.traceability[{t.name}]"
            if t.name in seen:
                self.fail(f"{at}: duplicate traceability source {t.name!r}")
            seen.add(t.name)
            if (t.stage is None) == (t.stage_column is None):
                self.fail(f"{at}: name the stage that removed its rows: 'stage' or 'stage_column'")
            if t.stage is not None and t.stage not in names:
                self.fail(f"{at}.stage: {t.stage!r} names no stage of pipeline {self.p.name!r}")
            for column in t.columns:
                if column not in self.p.key:
                    self.fail(f"{at}.columns.{column}: not a column of the key {self.p.key}")
            out.append(TraceSource(t.name, t.reported, t.stage, t.stage_column, t.reason_column))
        return out

    def datasets(self, stages: list[Stage], sources: list[TraceSource]) -> list[Dataset]:
        stage_specs = {s.name: s for s in self.p.stages}
        trace_specs = {t.name: t for t in self.p.traceability}
        for name in self.run.outputs:
            if name not in stage_specs:
                self.fail(f"run.outputs.{name}: names no stage of pipeline {self.p.name!r}")
        for name in self.run.traceability:
            if name not in trace_specs:
                self.fail(f"run.traceability.{name}: names no traceability source of the pipeline")
        out: list[Dataset] = []
        for stage in stages:
            at = f"run.outputs.{stage.name}"
            mapping = stage_specs[stage.name].columns
            dataset = self.open(stage.name, at, self.run.outputs.get(stage.name), mapping)
            if dataset is not None:
                out.append(StageOutput(**dataset, stage=stage))
        for source in sources:
            at = f"run.traceability.{source.name}"
            mapping = trace_specs[source.name].columns
            dataset = self.open(source.name, at, self.run.traceability.get(source.name), mapping)
            if dataset is None:
                continue
            columns = set(dataset["schema"].names)
            for role, column in (
                ("stage_column", source.stage_column),
                ("reason_column", source.reason_column),
            ):
                if column is not None and column not in columns:
                    self.fail(
                        f"{at} ({dataset['uri']}): {role} {column!r} is not a column; "
                        f"columns are {sorted(columns)}"
                    )
            out.append(TraceDataset(**dataset, source=source))
        return out

    def open(
        self, name: str, at: str, path: str | None, mapping: Mapping[str, str]
    ) -> dict[str, Any] | None:
        if path is None:
            self.fail(f"{at}: missing path")
            return None
        uri = resolve_path(path, self.base_dir)
        if not self.allowed(at, uri, [uri]):
            return None
        try:
            opened = open_dataset(uri)
            if not self.allowed(at, uri, opened.files):
                return None
            schema = opened.schema
        except FileNotFoundError as exc:
            self.fail(f"{at}: {exc}")
            return None
        except (pa.ArrowException, OSError) as exc:
            self.fail(f"{at} ({uri}): not readable as Parquet: {exc}")
            return None
        key_columns = tuple(mapping.get(c, c) for c in self.p.key)
        for column in key_columns:
            if column not in schema.names:
                self.fail(
                    f"{at} ({uri}): key column {column!r} is missing; columns are {schema.names}"
                )
        return {
            "name": name,
            "uri": uri,
            "field": at,
            "key_columns": key_columns,
            "schema": schema,
        }

    def allowed(self, at: str, uri: str, paths: Sequence[str]) -> bool:
        """Inside the data roots, symlinks and `..` resolved (only when roots are configured)."""
        if self.roots is None:
            return True
        for path in paths:
            real = Path(os.path.realpath(glob_base(path) if "://" not in path else path))
            if "://" in path or not any(real.is_relative_to(root) for root in self.roots):
                roots = ", ".join(str(r) for r in self.roots)
                self.fail(f"{at}: {uri} is outside the data roots ({roots})")
                return False
        return True

    def key_types(self, datasets: list[Dataset]) -> list[str]:
        """Declared types win; otherwise every dataset must agree on each component's type."""
        resolved: list[str] = []
        for i, column in enumerate(self.p.key):
            declared = self.p.key_types.get(column)
            seen: dict[str, Dataset] = {}
            for d in datasets:
                dtype = d.schema.field(d.key_columns[i]).type
                family = keymod.type_family(dtype)
                if family is None:
                    self.fail(
                        f"{d.field} ({d.uri}): key column {d.key_columns[i]!r} has type {dtype}, "
                        "which cannot be a lineage key (integers and strings can)"
                    )
                    continue
                seen.setdefault(family, d)
            if declared is None and len(seen) > 1:
                a, b = seen["int64"], seen["string"]
                self.fail(
                    f"pipeline.key_types.{column}: column is an integer in {a.uri} but a string "
                    f"in {b.uri}; declare key_types.{column} (string or int64) to compare them"
                )
            resolved.append(declared or next(iter(seen), "string"))
        return resolved
