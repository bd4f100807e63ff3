"""Runs assembled from OpenLineage events: a pipeline run registered without a manifest.

A pipeline definition maps OpenLineage jobs to its stages and traceability sources
(`openlineage: {namespace: airflow-prod, job: campaign.exclusions}`). Each RunEvent of
a mapped job is kept, grouped by its parent run: the root of its parent facet when it
names one (the Airflow DAG run, also for the Spark jobs a task launches), else the
parent (a DAG run, a Spark application); a job without a parent is its own group.
Once the COMPLETE events of a group have named an output for every stage and source,
and each is a Parquet location under the data roots, the run is validated like a
posted manifest and queued, its run id the group's run id. Until then it is pending,
with what it still waits for. Events of jobs no pipeline maps are accepted and ignored.
"""

from __future__ import annotations

import fnmatch
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection, Engine, func, insert, select, text, tuple_, update

from tracer.errors import ManifestError, NotFoundError, TracerError
from tracer.graph import build_graph
from tracer.limits import MAX_LABEL
from tracer.manifest import PipelineSpec, check_size, parse_document, parse_manifest
from tracer.model import Pipeline
from tracer.openlineage_mapping import OpenLineageJob
from tracer.pipelines import pipeline_lookup, register_pipeline
from tracer.queries.common import iso, parse_time
from tracer.queries.pages import MAX_PAGE, check_limit, decode_token, page
from tracer.store import Submitted, submit_run
from tracer.tables import openlineage_events, openlineage_runs, pipelines

Dispatch = Callable[[Submitted], Mapping[str, Any]]
"""Queues a registered run's jobs (the API passes its dispatcher); returns the job ids."""


class AssemblyStatus(StrEnum):
    PENDING = "pending"  # some stage or source has no output yet
    INVALID = "invalid"  # every output named, but the run does not validate (see errors)
    QUEUED = "queued"  # registered and queued as if its manifest had been posted


EventType = Literal["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]

# The event, as far as tracer reads it: the fields the spec requires, and the outputs.


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class DatasetRef(_Loose):
    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)


class JobRef(_Loose):
    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)


class ParentRun(_Loose):
    runId: uuid.UUID  # the spec's camelCase names throughout


class RootRef(_Loose):
    run: ParentRun
    job: JobRef


class ParentFacet(_Loose):
    run: ParentRun
    job: JobRef
    root: RootRef | None = None  # the run at the top: a DAG run above a Spark job's task


class RunFacets(_Loose):
    parent: ParentFacet | None = None


class RunRef(_Loose):
    runId: uuid.UUID
    facets: RunFacets | None = None


class RunEventIn(_Loose):
    """An OpenLineage RunEvent (spec 2-0-x); unknown fields and facets are allowed."""

    eventTime: datetime
    producer: str = Field(min_length=1)
    schemaURL: str = Field(min_length=1)
    eventType: EventType | None = None
    run: RunRef
    job: JobRef
    inputs: list[DatasetRef] | None = None
    outputs: list[DatasetRef] | None = None

    @property
    def parent(self) -> RootRef | ParentFacet | None:
        """The run this job ran in: the root run when named (an Airflow DAG run, also above
        the Spark jobs its tasks launch), else the parent; None for a job on its own."""
        parent = self.run.facets.parent if self.run.facets else None
        return parent.root or parent if parent else None

    @property
    def group(self) -> str:
        """The run this event belongs to: its (root) parent's, or its own when it has none."""
        return str(self.parent.run.runId if self.parent else self.run.runId)


def parse_event(body: Any) -> RunEventIn | None:
    """The RunEvent in `body`; None for a static DatasetEvent or JobEvent (nothing to assemble).

    A malformed event raises TracerError naming every field at fault.
    """
    if not isinstance(body, dict):
        raise TracerError("an OpenLineage event is a JSON object")
    if "run" not in body and ("dataset" in body or "job" in body):
        return None
    try:
        return RunEventIn.model_validate(body)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors()
        ]
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems"
        raise TracerError(f"invalid OpenLineage RunEvent: {head}", problems) from None


# Receiving ------------------------------------------------------------------------------------


def receive(engine: Engine, body: Any, roots: Sequence[Path], dispatch: Dispatch) -> dict[str, Any]:
    """Keep an event of a mapped job and try to assemble each run it belongs to."""
    event = parse_event(body)
    if event is None:
        return _answer("ignored", "a DatasetEvent or JobEvent: tracer assembles runs only")
    job = {"namespace": event.job.namespace, "name": event.job.name}
    mapping = mapped_pipelines(engine, event.job.namespace, event.job.name)
    if not mapping:
        return _answer("ignored", f"no pipeline maps job {_job_text(job)}", job)
    parent = event.parent
    with engine.begin() as conn:
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"openlineage:{event.group}"}
        )
        conn.execute(
            insert(openlineage_events).values(
                parent_run_id=event.group,
                parent_namespace=parent.job.namespace if parent else None,
                parent_name=parent.job.name if parent else None,
                job_namespace=event.job.namespace,
                job_name=event.job.name,
                run_id=str(event.run.runId),
                event_type=event.eventType,
                event_time=_aware(event.eventTime),
                outputs=[{"namespace": o.namespace, "name": o.name} for o in event.outputs or []],
            )
        )
        assembled = [
            _assemble(conn, engine, event.group, name, spec, roots, dispatch)
            for name, spec in mapping
        ]
    return {**_answer("accepted", None, job), "runs": assembled}


def _answer(status: str, reason: str | None, job: dict[str, str] | None = None) -> dict[str, Any]:
    return {"status": status, "reason": reason, "job": job, "runs": []}


def _job_text(job: Mapping[str, str]) -> str:
    return f"{job['namespace']}/{job['name']}"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def mapped_pipelines(engine: Engine, namespace: str, job: str) -> list[tuple[str, dict[str, Any]]]:
    """The registered pipelines (latest definitions) that map this job, with their specs."""
    with engine.connect() as conn:
        names = conn.execute(select(pipelines.c.name).order_by(pipelines.c.name)).scalars().all()
    lookup = pipeline_lookup(engine)
    found = []
    for name in names:
        try:
            spec = lookup(name)
        except KeyError:  # deleted meanwhile
            continue
        if any(
            (m.namespace, m.job) == (namespace, job) for _, _, m in _targets(spec) if m is not None
        ):
            found.append((name, dict(spec)))
    return found


def mapped_jobs(engine: Engine, pipeline: str) -> list[dict[str, Any]]:
    """The jobs the pipeline's latest definition maps, per stage and source."""
    try:
        spec = pipeline_lookup(engine)(pipeline)
    except KeyError:
        raise NotFoundError(f"pipeline {pipeline!r} not found") from None
    return [
        {"role": role, "name": name, "namespace": m.namespace, "job": m.job, "output": m.output}
        for role, name, m in _targets(spec)
        if m is not None
    ]


def _targets(spec: Mapping[str, Any]) -> list[tuple[str, str, OpenLineageJob | None]]:
    """(role, name, mapping) of every stage, then every traceability source."""
    out = []
    for role, part in (("stage", "stages"), ("traceability", "traceability")):
        for item in spec.get(part, []):
            mapped = item.get("openlineage")
            out.append((role, item["name"], OpenLineageJob(**mapped) if mapped else None))
    return out


def _assemble(
    conn: Connection,
    engine: Engine,
    group: str,
    pipeline: str,
    spec: dict[str, Any],
    roots: Sequence[Path],
    dispatch: Dispatch,
) -> dict[str, Any]:
    """Where the run of `group` stands for `pipeline`; registers and queues it when complete."""
    e = openlineage_events.c
    events = conn.execute(
        select(e.job_namespace, e.job_name, e.event_type, e.outputs, e.parent_namespace,
               e.parent_name)
        .where(e.parent_run_id == group)
        .order_by(e.event_time, e.id)
    ).all()  # fmt: skip
    outputs: dict[str, dict[str, str]] = {"outputs": {}, "traceability": {}}
    missing = []
    for role, name, mapped in _targets(spec):
        where = "outputs" if role == "stage" else "traceability"
        found, reason = _output_of(events, mapped, roots)
        if found is None:
            job = {"namespace": mapped.namespace, "name": mapped.job} if mapped else None
            missing.append({"role": role, "name": name, "job": job, "reason": reason})
        else:
            outputs[where][name] = found
    parent = next(((ev.parent_namespace, ev.parent_name) for ev in events if ev.parent_name), None)
    row = conn.execute(
        select(openlineage_runs).where(
            openlineage_runs.c.parent_run_id == group, openlineage_runs.c.pipeline == pipeline
        )
    ).first()
    status, errors, job_ids = AssemblyStatus.PENDING, [], None
    submitted = row.submitted if row is not None else None
    if not missing:
        # The run id is the group's UUID, whose text the name grammar admits (tracer.limits);
        # the label, the parent job's name, is cut to the length a label may have.
        label = parent[1][:MAX_LABEL] if parent else None
        run_part = {"id": group, "label": label, **outputs}
        if row is not None and row.status == AssemblyStatus.QUEUED and row.submitted == run_part:
            status = AssemblyStatus.QUEUED  # the same outputs again: nothing new to load
        else:
            try:
                manifest = parse_manifest(
                    {"pipeline": spec, "run": run_part},
                    base_dir=roots[0],
                    source=f"OpenLineage run {group}",
                    roots=roots,
                )
                registered = submit_run(engine, manifest)
                job_ids = dict(dispatch(registered))
                status, submitted = AssemblyStatus.QUEUED, run_part
            except TracerError as exc:  # invalid files, a run id reused, ...
                status, errors = AssemblyStatus.INVALID, list(exc.errors)
    values = {
        "parent_namespace": parent[0] if parent else None,
        "parent_name": parent[1] if parent else None,
        "status": status,
        "missing": missing,
        "errors": errors,
        "submitted": submitted,
    }
    if row is None:
        conn.execute(
            insert(openlineage_runs).values(parent_run_id=group, pipeline=pipeline, **values)
        )
    else:
        conn.execute(
            update(openlineage_runs)
            .where(openlineage_runs.c.id == row.id)
            .values(updated_at=func.now(), **values)
        )
    return {
        "run_id": group,
        "pipeline": pipeline,
        "status": str(status),
        "missing": missing,
        "errors": errors,
        "job_ids": job_ids,
    }


def _output_of(
    events: Sequence[Any], mapped: OpenLineageJob | None, roots: Sequence[Path]
) -> tuple[str | None, str]:
    """The dataset the mapped job's latest COMPLETE event wrote, or why there is none yet."""
    if mapped is None:
        return None, "the pipeline maps no OpenLineage job to it (openlineage: {namespace, job})"
    mine = [
        ev for ev in events if (ev.job_namespace, ev.job_name) == (mapped.namespace, mapped.job)
    ]
    complete = [ev for ev in mine if ev.event_type == "COMPLETE"]
    if not complete:
        if not mine:
            return None, "no event of its job yet"
        return None, f"its job has not completed (last event: {mine[-1].event_type or 'no type'})"
    written = complete[-1].outputs
    if mapped.output is not None:
        written = [o for o in written if fnmatch.fnmatchcase(o["name"], mapped.output)]
    if not written:
        which = f" matching {mapped.output!r}" if mapped.output else ""
        return None, f"its COMPLETE event names no output dataset{which}"
    usable = [p for p in (_local_path(o) for o in written) if p and _under(p, roots)]
    if len(usable) == 1:
        return usable[0], ""
    seen = ", ".join(f"{o['namespace']}:{o['name']}" for o in written)
    if not usable:
        return None, f"no output is a Parquet location under the data roots (it wrote {seen})"
    fix = "make openlineage.output match only one" if mapped.output else "set openlineage.output"
    return None, f"it wrote {len(usable)} datasets under the data roots ({seen}): {fix}"


def _local_path(dataset: Mapping[str, str]) -> str | None:
    """The local path an OpenLineage dataset names (namespace `file` or `file://host`)."""
    namespace, name = dataset["namespace"], dataset["name"]
    if namespace == "file" or namespace.startswith("file://"):
        return name if name.startswith("/") else None
    return None


def _under(path: str, roots: Sequence[Path]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real.is_relative_to(os.path.realpath(root)) for root in roots)


# Reading -------------------------------------------------------------------------------------


def pending_runs(
    conn: Connection,
    pipeline: str | None = None,
    status: Sequence[str] = (AssemblyStatus.PENDING, AssemblyStatus.INVALID),
    limit: int = 50,
    after: str | None = None,
) -> dict[str, Any]:
    """Runs assembled from events, most recently updated first, with what each waits for."""
    limit = check_limit(limit, MAX_PAGE)
    wanted = sorted({AssemblyStatus(s).value for s in status})
    scope = ("openlineage_pending", pipeline, wanted)
    r, e = openlineage_runs.c, openlineage_events.c
    counts = (
        select(e.parent_run_id, func.count().label("events")).group_by(e.parent_run_id).subquery()
    )
    query = (
        select(openlineage_runs, counts.c.events)
        .outerjoin(counts, counts.c.parent_run_id == r.parent_run_id)
        .where(r.status.in_(wanted))
    )
    if pipeline is not None:
        query = query.where(r.pipeline == pipeline)
    if after:
        updated, pk = decode_token(after, scope, (str, int))
        query = query.where(tuple_(r.updated_at, r.id) < tuple_(parse_time(updated), pk))
    rows = conn.execute(query.order_by(r.updated_at.desc(), r.id.desc()).limit(limit + 1)).all()
    items = [
        {
            "run_id": row.parent_run_id,
            "pipeline": row.pipeline,
            "parent": {"namespace": row.parent_namespace, "name": row.parent_name},
            "status": row.status,
            "events": row.events or 0,
            "missing": row.missing,
            "errors": row.errors,
            "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at),
        }
        for row in rows[:limit]
    ]
    last = (iso(rows[limit - 1].updated_at), rows[limit - 1].id) if len(rows) > limit else None
    return page(items, last, scope)


# Defining a pipeline before any run ------------------------------------------------------------


def define_pipeline(engine: Engine, text_or_data: str | Mapping[str, Any], source: str) -> str:
    """Register a pipeline definition (the manifest's `pipeline` part) with no run yet, so
    events of the jobs it maps can assemble its runs. Returns the pipeline's name."""
    raw: Any = text_or_data
    if isinstance(text_or_data, str):
        raw = parse_document(text_or_data, source)  # bounded: no alias bomb, no deep nesting
    else:
        check_size(raw, source)
    if isinstance(raw, dict) and isinstance(raw.get("pipeline"), dict):
        raw = raw["pipeline"]  # a whole manifest: its pipeline part
    if not isinstance(raw, dict):
        raise ManifestError(f"{source}: a pipeline definition is a mapping (name, key, stages)")
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"pipeline.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        ]
        raise _invalid(source, problems) from None
    problems = []
    graph = build_graph(
        [(s.name, s.parents) for s in spec.stages], problems.append, field="pipeline.stages"
    )
    names = {s.name for s in spec.stages}
    for t in spec.traceability:
        if t.stage is not None and t.stage not in names:
            problems.append(f"pipeline.traceability[{t.name}].stage: {t.stage!r} names no stage")
    if problems or graph is None:
        raise _invalid(source, problems)
    definition = Pipeline(  # what the registry keeps: the name and the normalised spec
        name=spec.name,
        key=tuple(spec.key),
        key_types=tuple(spec.key_types.get(c, "string") for c in spec.key),
        stages=(),
        traceability=(),
        graph=graph,
        spec=spec.model_dump(mode="json"),
    )
    with engine.begin() as conn:
        register_pipeline(conn, definition)
    return spec.name


def _invalid(source: str, problems: list[str]) -> ManifestError:
    head = problems[0] if len(problems) == 1 else f"{len(problems)} problems"
    return ManifestError(f"{source}: invalid pipeline definition: {head}", problems)
