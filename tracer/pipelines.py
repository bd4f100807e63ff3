"""The pipeline registry: every definition posted under a name, kept as numbered versions.

A run points at the version it was classified with, so a later definition never changes
what an earlier run means. A definition that changes the key is refused instead: keys of
the old and new runs could no longer be compared (history, journeys). A manifest that
names a pipeline (`pipeline: campaign`) gets the latest version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tracer.errors import ConflictError, NotFoundError
from tracer.model import Pipeline
from tracer.queries.common import iso, parse_time, run_columns, run_header
from tracer.queries.pages import MAX_PAGE, check_limit, decode_token, page
from tracer.tables import pipeline_versions, pipelines, runs

RUN_SAMPLE = 10
"""Run ids shown with each version; the version's runs list pages through all of them."""
versions = pipeline_versions


def register_pipeline(conn: Connection, pipeline: Pipeline) -> dict[str, Any]:
    """The version of this definition: an existing one if posted before, else a new one.

    Returns the run row's columns that point at the pipeline and the version. Concurrent
    runs of a pipeline read it side by side; only a new version waits for another.
    """
    name, spec = pipeline.name, pipeline.spec
    pipeline_id = _pipeline_id(conn, name)
    version_id = _version_with(conn, pipeline_id, spec)
    if version_id is None:
        _lock(conn, pipeline_id)
        version_id = _version_with(conn, pipeline_id, spec)  # another run may have just added it
        if version_id is None:
            version_id = _add_version(conn, name, pipeline_id, spec)
    return {"pipeline_id": pipeline_id, "pipeline_version_id": version_id}


def _pipeline_id(conn: Connection, name: str) -> int:
    """The pipeline's id, created if new, held (FOR KEY SHARE) so it cannot be deleted meanwhile."""
    query = select(pipelines.c.id).where(pipelines.c.name == name)
    pipeline_id = conn.execute(query.with_for_update(read=True, key_share=True)).scalar()
    if pipeline_id is None:
        conn.execute(pg_insert(pipelines).values(name=name).on_conflict_do_nothing())
        pipeline_id = conn.execute(query.with_for_update(read=True, key_share=True)).scalar()
    if pipeline_id is None:
        raise ConflictError(f"pipeline {name!r} was deleted while this run registered: post again")
    return pipeline_id


def _lock(conn: Connection, pipeline_id: int, for_delete: bool = False) -> None:
    """FOR NO KEY UPDATE to add a version: one at a time, beside the runs reading it (KEY
    SHARE). FOR UPDATE to delete the pipeline: after every run registering now."""
    query = select(pipelines.c.id).where(pipelines.c.id == pipeline_id)
    conn.execute(query.with_for_update() if for_delete else query.with_for_update(key_share=True))


def _version_with(conn: Connection, pipeline_id: int, spec: Mapping[str, Any]) -> int | None:
    return conn.execute(
        select(versions.c.id)
        .where(versions.c.pipeline_id == pipeline_id, versions.c.spec == spec)
        .order_by(versions.c.version)
        .limit(1)
    ).scalar()


def _add_version(conn: Connection, name: str, pipeline_id: int, spec: Mapping[str, Any]) -> int:
    latest = conn.execute(
        select(versions.c.version, versions.c.spec)
        .where(versions.c.pipeline_id == pipeline_id)
        .order_by(versions.c.version.desc())
        .limit(1)
    ).first()
    if latest is not None:
        changes = key_changes(latest.spec, spec, latest.version)
        if changes:
            raise ConflictError(
                f"pipeline {name!r}: this definition changes the key of version "
                f"{latest.version}, so its runs' keys could not be compared with this run's; "
                "post it under a new pipeline name, or delete the pipeline's runs and the "
                "pipeline first",
                changes,
            )
    return conn.execute(
        insert(versions)
        .values(pipeline_id=pipeline_id, version=(latest.version if latest else 0) + 1, spec=spec)
        .returning(versions.c.id)
    ).scalar_one()


def key_changes(old: Mapping[str, Any], new: Mapping[str, Any], version: int) -> list[str]:
    """How `new` changes the key of `old`: its columns (in order), or a declared type."""
    old_key, new_key = list(old.get("key", [])), list(new.get("key", []))
    if old_key != new_key:
        return [f"pipeline.key: {new_key} here, {old_key} in version {version}"]
    changes = []
    for column in new_key:
        was = old.get("key_types", {}).get(column) or "undeclared"
        now = new.get("key_types", {}).get(column) or "undeclared"
        if was != now:
            changes.append(f"pipeline.key_types.{column}: {now} here, {was} in version {version}")
    return changes


def pipeline_lookup(engine: Engine) -> Callable[[str], dict[str, Any]]:
    """For manifests that name a registered pipeline instead of spelling it out: its latest."""

    def lookup(name: str) -> dict[str, Any]:
        with engine.connect() as conn:
            spec = conn.execute(
                select(versions.c.spec)
                .join(pipelines, pipelines.c.id == versions.c.pipeline_id)
                .where(pipelines.c.name == name)
                .order_by(versions.c.version.desc())
                .limit(1)
            ).scalar()
        if spec is None:
            raise KeyError(name)
        return spec

    return lookup


def _outline(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What a reader scans for: the key and the names of the stages and sources."""
    return {
        "key": list(spec.get("key", [])),
        "stages": [s["name"] for s in spec.get("stages", [])],
        "traceability": [t["name"] for t in spec.get("traceability", [])],
    }


def _latest() -> Any:
    """Each pipeline's latest version number."""
    return (
        select(versions.c.pipeline_id, func.max(versions.c.version).label("version"))
        .group_by(versions.c.pipeline_id)
        .subquery()
    )


def list_pipelines(conn: Connection, limit: int = 50, after: str | None = None) -> dict[str, Any]:
    """Registered pipelines by name: the latest version's outline, and runs of every version."""
    limit = check_limit(limit, MAX_PAGE)
    scope = ("pipelines",)
    counts = (
        select(
            runs.c.pipeline_id,
            func.count().label("runs"),
            func.max(runs.c.created_at).label("last"),
        )
        .group_by(runs.c.pipeline_id)
        .subquery()
    )
    latest = _latest()
    query = (
        select(pipelines.c.name, latest.c.version, versions.c.spec, counts.c.runs, counts.c.last)
        .join(latest, latest.c.pipeline_id == pipelines.c.id)
        .join(
            versions,
            and_(versions.c.pipeline_id == pipelines.c.id, versions.c.version == latest.c.version),
        )
        .outerjoin(counts, counts.c.pipeline_id == pipelines.c.id)
    )
    if after:
        (last_name,) = decode_token(after, scope, (str,))
        query = query.where(pipelines.c.name > last_name)
    rows = conn.execute(query.order_by(pipelines.c.name).limit(limit + 1)).all()
    items = [
        {
            "name": r.name,
            "latest_version": r.version,
            **_outline(r.spec),
            "runs": r.runs or 0,
            "last_run_at": iso(r.last),
        }
        for r in rows[:limit]
    ]
    return page(items, (rows[limit - 1].name,) if len(rows) > limit else None, scope)


def _find(conn: Connection, name: str) -> Any:
    row = conn.execute(
        select(pipelines.c.id, pipelines.c.name, pipelines.c.created_at).where(
            pipelines.c.name == name
        )
    ).first()
    if row is None:
        raise NotFoundError(f"pipeline {name!r} not found")
    return row


def pipeline_detail(conn: Connection, name: str, sample: int = RUN_SAMPLE) -> dict[str, Any]:
    """The pipeline's versions, oldest first, each with its definition and the runs using it."""
    p = _find(conn, name)
    used = (
        select(
            runs.c.pipeline_version_id,
            runs.c.run_id,
            func.count().over(partition_by=runs.c.pipeline_version_id).label("runs"),
            func.row_number()
            .over(
                partition_by=runs.c.pipeline_version_id,
                order_by=(runs.c.created_at.desc(), runs.c.pk.desc()),
            )
            .label("n"),
        )
        .where(runs.c.pipeline_id == p.id)
        .subquery()
    )
    counts: dict[int, int] = {}
    newest: dict[int, list[str]] = {}
    for r in conn.execute(select(used).where(used.c.n <= sample).order_by(used.c.n)):
        counts[r.pipeline_version_id] = r.runs
        newest.setdefault(r.pipeline_version_id, []).append(r.run_id)
    rows = conn.execute(
        select(versions.c.id, versions.c.version, versions.c.spec, versions.c.created_at)
        .where(versions.c.pipeline_id == p.id)
        .order_by(versions.c.version)
    ).all()
    return {
        "name": p.name,
        "created_at": iso(p.created_at),
        "latest_version": rows[-1].version if rows else None,
        "runs": sum(counts.values()),
        "versions": [
            {
                "version": v.version,
                "created_at": iso(v.created_at),
                **_outline(v.spec),
                "key_types": dict(v.spec.get("key_types", {})),
                "spec": v.spec,
                "runs": counts.get(v.id, 0),
                "run_ids": newest.get(v.id, []),
            }
            for v in rows
        ],
    }


def version_runs(
    conn: Connection, name: str, version: int, limit: int = 50, after: str | None = None
) -> dict[str, Any]:
    """The runs classified with one version of the pipeline, newest first, keyset pages."""
    limit = check_limit(limit, MAX_PAGE)
    p = _find(conn, name)
    version_id = conn.execute(
        select(versions.c.id).where(versions.c.pipeline_id == p.id, versions.c.version == version)
    ).scalar()
    if version_id is None:
        raise NotFoundError(f"pipeline {name!r} has no version {version}")
    scope = ("pipeline-version-runs", name, version)
    query = (
        select(*run_columns(), pipelines.c.name.label("pipeline_name"))
        .join(pipelines, pipelines.c.id == runs.c.pipeline_id)
        .where(runs.c.pipeline_version_id == version_id)
    )
    if after:
        created, pk = decode_token(after, scope, (str, int))
        query = query.where(tuple_(runs.c.created_at, runs.c.pk) < tuple_(parse_time(created), pk))
    rows = conn.execute(
        query.order_by(runs.c.created_at.desc(), runs.c.pk.desc()).limit(limit + 1)
    ).all()
    last = (iso(rows[limit - 1].created_at), rows[limit - 1].pk) if len(rows) > limit else None
    return page(
        [run_header(r) for r in rows[:limit]], last, scope, pipeline=p.name, version=version
    )


def delete_pipeline(engine: Engine, name: str) -> None:
    """Delete a pipeline and its versions; refused while a run uses any of them."""
    with engine.begin() as conn:
        p = _find(conn, name)
        _lock(conn, p.id, for_delete=True)  # waits for runs registering now; they count below
        used = conn.execute(
            select(runs.c.run_id, func.count().over().label("total"))
            .where(runs.c.pipeline_id == p.id)
            .order_by(runs.c.created_at.desc(), runs.c.pk.desc())
            .limit(RUN_SAMPLE)
        ).all()
        if used:
            total = used[0].total
            listed = ", ".join(repr(r.run_id) for r in used)
            more = f" and {total - len(used)} more" if total > len(used) else ""
            raise ConflictError(
                f"pipeline {name!r} is used by {total} run(s) ({listed}{more}): delete them first",
                [f"run {r.run_id!r} uses pipeline {name!r}" for r in used],
            )
        conn.execute(delete(pipelines).where(pipelines.c.id == p.id))
