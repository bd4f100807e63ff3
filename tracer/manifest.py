"""The run manifest: load YAML or JSON, validate it, and open every dataset it names.

Parsing and validation only: what it builds is the domain of tracer.model.

Validation reads the footer of every Parquet file a dataset path holds (never
the data), so a missing path, an empty, truncated or corrupt file, a part file
lacking a key column or typing a column otherwise than its siblings, or a key
column of the wrong type is refused before anything is written. Names, sizes
and counts are bounded (tracer.limits). Every problem found is reported at
once, each naming the manifest field, file or column at fault.
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
from tracer.bounded_yaml import NestedTooDeep, load_yaml, yaml_problem
from tracer.errors import ManifestError
from tracer.graph import StageGraph, build_graph
from tracer.limits import (
    MAX_FILES,
    MAX_GRAIN_COLUMNS,
    MAX_KEY_COLUMNS,
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_DEPTH,
    MAX_MANIFEST_NODES,
    MAX_SOURCES,
    MAX_STAGES,
    ColumnName,
    DatasetPath,
    Label,
    Name,
    nul_field,
)
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
from tracer.sources import glob_base, open_dataset, read_footer, read_footers, resolve_path


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class StageSpec(_Model):
    name: Name
    parents: list[Name] | None = Field(default=None, max_length=MAX_STAGES)
    grain: list[ColumnName] | None = Field(default=None, max_length=MAX_GRAIN_COLUMNS)
    fanout: Literal["none", "expected"] = "none"
    split: Literal["copy", "route"] = "copy"
    columns: dict[ColumnName, ColumnName] = Field(default_factory=dict, max_length=MAX_KEY_COLUMNS)
    openlineage: OpenLineageJob | None = None  # the job whose output this is (openlineage_in)

    _lists = field_validator("grain", "parents", mode="before")(_as_list)
    _unmapped = omit_unmapped


class TraceSpec(_Model):
    name: Name
    reported: bool
    stage: Name | None = None
    stage_column: ColumnName | None = None
    reason_column: ColumnName | None = None
    columns: dict[ColumnName, ColumnName] = Field(default_factory=dict, max_length=MAX_KEY_COLUMNS)
    openlineage: OpenLineageJob | None = None  # the job whose output this is (openlineage_in)

    _unmapped = omit_unmapped


class PipelineSpec(_Model):
    name: Name
    key: list[ColumnName] = Field(min_length=1, max_length=MAX_KEY_COLUMNS)
    key_types: dict[ColumnName, Literal["int64", "string"]] = Field(
        default_factory=dict, max_length=MAX_KEY_COLUMNS
    )
    stages: list[StageSpec] = Field(min_length=1, max_length=MAX_STAGES)
    traceability: list[TraceSpec] = Field(default_factory=list, max_length=MAX_SOURCES)

    _key = field_validator("key", mode="before")(_as_list)


class RunSpec(_Model):
    id: Name
    label: Label | None = None
    rerun_of: Name | None = None
    outputs: dict[Name, DatasetPath] = Field(max_length=MAX_STAGES)
    traceability: dict[Name, DatasetPath] = Field(default_factory=dict, max_length=MAX_SOURCES)


class ManifestSpec(_Model):
    pipeline: PipelineSpec | Name
    run: RunSpec


PipelineLookup = Callable[[str], Mapping[str, Any]]


def load_manifest(path: str | Path, lookup: PipelineLookup | None = None) -> Manifest:
    """Read and validate the manifest file at `path`; relative paths are from its folder."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{path}: a manifest may have at most {MAX_MANIFEST_BYTES:,} bytes; this one has more"
        )
    return parse_manifest(
        decode_text(data, str(path)),
        base_dir=path.resolve().parent,
        source=str(path),
        lookup=lookup,
    )


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 text, or an error saying where the first byte that is not UTF-8 is."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ManifestError(
            f"{source}: not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}, "
            f"column {column} (byte {exc.start:,}); save the manifest as UTF-8"
        ) from None


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
    raw = parse_document(text, source) if isinstance(text, str) else dict(text)
    if not isinstance(text, str):
        check_size(raw, source)
    if (field := nul_field(raw, MAX_MANIFEST_NODES)) is not None:  # Postgres cannot store it
        raise ManifestError(f"{source}: {field} holds a NUL character (U+0000)")
    try:
        spec = ManifestSpec.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(source, exc, raw) from None
    pipeline_spec = spec.pipeline
    if isinstance(pipeline_spec, str):
        if lookup is None:
            raise ManifestError(
                f"{source}: pipeline {pipeline_spec!r} named, but no registry given"
            )
        name = pipeline_spec
        try:
            pipeline_spec = PipelineSpec.model_validate(lookup(name))
        except KeyError:
            raise ManifestError(
                f"{source}: pipeline: no registered pipeline named {name!r}"
            ) from None
        except ValidationError as exc:  # registered before today's limits: say so, no traceback
            problems = [f"pipeline {name!r}: {_pydantic_message(e)}" for e in exc.errors()]
            head = problems[0] if len(problems) == 1 else f"{len(problems)} problems"
            raise ManifestError(f"{source}: registered {head}", problems) from None
    return _Validator(pipeline_spec, spec.run, base_dir, source, roots).manifest()


def parse_document(text: str, source: str) -> dict[str, Any]:
    """YAML or JSON text as a mapping, bounded in size and depth; every way it can be
    malformed is a ManifestError (manifests and pipeline definitions alike)."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{source}: a manifest may have at most {MAX_MANIFEST_BYTES:,} bytes")
    too_deep = f"{source}: nested too deeply (a manifest nests at most {MAX_MANIFEST_DEPTH} levels)"
    try:
        is_json = text.lstrip().startswith("{")
        data = json.loads(text) if is_json else load_yaml(text, MAX_MANIFEST_DEPTH)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
        ) from None
    except NestedTooDeep as exc:
        raise ManifestError(too_deep + exc.where) from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: not valid YAML{yaml_problem(exc)}") from None
    except RecursionError:  # JSON's decoder recurses too
        raise ManifestError(too_deep) from None
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: a manifest is a mapping with 'pipeline' and 'run'")
    check_size(data, source)
    return data


def check_size(data: Any, source: str) -> None:
    """Refuse a document too deep or, YAML aliases expanded, too big to validate.

    PyYAML builds `&a [*b, *b, ...]` chains as shared objects, cheaply; everything after
    (validation, storing the document as JSON) would expand them. The walk stops at the
    limit, so even a billion-laughs document costs at most MAX_MANIFEST_NODES steps.
    """
    stack: list[tuple[Any, int]] = [(data, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_MANIFEST_NODES:
            raise ManifestError(
                f"{source}: more than {MAX_MANIFEST_NODES:,} values once YAML aliases are "
                "expanded; a manifest is far smaller (a YAML alias bomb?)"
            )
        if depth > MAX_MANIFEST_DEPTH:
            raise ManifestError(
                f"{source}: nested too deeply (a manifest nests at most {MAX_MANIFEST_DEPTH} "
                "levels)"
            )
        if isinstance(value, Mapping):
            stack.extend((v, depth + 1) for v in value.values())
            stack.extend((k, depth + 1) for k in value)
        elif isinstance(value, list | tuple):
            stack.extend((v, depth + 1) for v in value)


def _invalid(source: str, exc: ValidationError, raw: Mapping[str, Any]) -> ManifestError:
    """Every field at fault, as `pipeline.stages[2].name: what is wrong`.

    `pipeline` is a definition or a registered pipeline's name: only the errors of the
    alternative the document chose are the user's.
    """
    given = raw.get("pipeline")
    skip = (
        "PipelineSpec"
        if isinstance(given, str)
        else "function-after[check_name(), str]"
        if isinstance(given, Mapping)
        else None
    )
    problems = []
    for error in exc.errors():
        loc = error["loc"]
        if len(loc) > 1 and loc[0] == "pipeline" and loc[1] == skip:
            continue
        problems.append(_pydantic_message(error))
    head = problems[0] if len(problems) == 1 else f"{len(problems)} problems"
    return ManifestError(f"{source}: invalid manifest: {head}", problems)


def _pydantic_message(error: Mapping[str, Any]) -> str:
    where = ""
    for part in error["loc"]:
        if isinstance(part, int):
            where += f"[{part}]"
        elif part == "PipelineSpec" or str(part).startswith("function-after["):
            continue
        else:
            where += f".{part}" if where else str(part)
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where or 'manifest'}: {message}"


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
        self.check_grains(datasets)
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
            grain = [mapping.get(c, c) for c in stage.grain]
            dataset = self.open(stage.name, at, self.run.outputs.get(stage.name), mapping, grain)
            if dataset is not None:
                out.append(StageOutput(**dataset, stage=stage))
        for source in sources:
            at = f"run.traceability.{source.name}"
            mapping = trace_specs[source.name].columns
            read = [c for c in (source.stage_column, source.reason_column) if c is not None]
            path = self.run.traceability.get(source.name)
            dataset = self.open(source.name, at, path, mapping, read)
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
                        f"columns are {', '.join(sorted(columns))}"
                    )
            out.append(TraceDataset(**dataset, source=source))
        return out

    def open(
        self,
        name: str,
        at: str,
        path: str | None,
        mapping: Mapping[str, str],
        wanted: Sequence[str],
    ) -> dict[str, Any] | None:
        """Open a dataset and check every file's footer; `wanted`: columns it is read by."""
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
            footer = read_footer(uri) if os.path.isfile(uri) else None
            said = str(exc).removeprefix("Error creating dataset. ")
            reason = footer if isinstance(footer, str) else f"not readable as Parquet: {said}"
            self.fail(f"{at} ({uri}): {reason}")
            return None
        key_columns = tuple(mapping.get(c, c) for c in self.p.key)
        for column in key_columns:
            if column not in schema.names:
                self.fail(
                    f"{at} ({uri}): key column {column!r} is missing; "
                    f"columns are {', '.join(schema.names)}"
                )
        if not self.check_files(at, uri, opened, [*key_columns, *wanted]):
            return None
        return {
            "name": name,
            "uri": uri,
            "field": at,
            "key_columns": key_columns,
            "schema": schema,
        }

    def check_files(self, at: str, uri: str, opened: Any, wanted: Sequence[str]) -> bool:
        """Every file readable, holding the columns read, with one type per column.

        Otherwise a part file lacking the key would load as null-key rows, and a key
        typed string in one part and int64 in another would be cast without a word.
        """
        if len(opened.files) > MAX_FILES:
            self.fail(
                f"{at} ({uri}): {len(opened.files):,} files; a dataset may have {MAX_FILES:,}"
            )
            return False
        parts, problems = read_footers(opened)
        for problem in problems:
            self.fail(f"{at}: {problem}")
        # A column of the dataset in no file's own schema is a hive folder (`branch=LIS/`).
        physical = {name for part in parts for name in part.schema.names}
        wanted = [c for c in dict.fromkeys(wanted) if c in physical]
        types: dict[str, tuple[pa.DataType, str]] = {}
        ok = not problems
        for part in parts:
            missing = [c for c in wanted if c not in part.schema.names]
            if missing:
                ok = False
                self.fail(
                    f"{at}: {part.path}: column {', '.join(map(repr, missing))} is missing "
                    f"(the other files of {uri} have it); "
                    f"columns are {', '.join(part.schema.names)}"
                )
            for field in part.schema:
                first = types.setdefault(field.name, (field.type, part.path))
                if first[0] != field.type:
                    ok = False
                    self.fail(
                        f"{at}: {part.path}: column {field.name!r} has type {field.type}, "
                        f"but {first[0]} in {first[1]}; every file of a dataset needs one type"
                    )
        return ok

    def check_grains(self, datasets: list[Dataset]) -> None:
        """A grain column must be in the stage's output or an earlier one's (then it is drift).

        A column in neither is a typo, not a dropped identifier (docs/semantics.md#stage-flags).
        """
        outputs = {d.stage.name: d for d in datasets if isinstance(d, StageOutput)}
        for d in outputs.values():
            mapping = dict(zip(self.p.key, d.key_columns, strict=True))
            ancestors, todo = set(), list(d.stage.parents)
            while todo:
                parent = todo.pop()
                if parent not in ancestors:
                    ancestors.add(parent)
                    todo.extend(outputs[parent].stage.parents if parent in outputs else ())
            earlier = {n for a in ancestors if a in outputs for n in outputs[a].schema.names}
            for column in d.stage.grain:
                named = mapping.get(column, column)
                if named not in d.schema.names and named not in earlier:
                    self.fail(
                        f"pipeline.stages[{d.stage.name}].grain: column {named!r} is neither in "
                        f"dataset {d.name!r} ({d.uri}) nor in any earlier stage's output; "
                        f"columns are {', '.join(d.schema.names)}"
                    )

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
