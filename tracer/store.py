"""Writing runs to the store: register a manifest, ingest what changed, classify; delete a run.

Two ways through, on the same functions: `ingest_manifest` does it all in one
transaction (the CLI without a queue: a failure anywhere leaves the database
exactly as it was); `submit_run` registers the run, then `ingest_step` per
dataset and `classify_step` each run in their own transaction (the queue's jobs,
possibly on many machines). Advisory locks make concurrent steps on the same
dataset or run wait for each other, so nothing is ingested twice at once.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, delete, insert, select, text, update

from tracer.chunks import LocalChunks
from tracer.classify import classify_run
from tracer.errors import ConflictError, NotFoundError, TracerError
from tracer.ingest import IngestResult, Progress, ingest_dataset, opened
from tracer.manifest import parse_manifest
from tracer.model import Dataset, DatasetStatus, Manifest, RunStatus
from tracer.partitions import drop_run_partitions, ensure_chunk_partition
from tracer.pipelines import register_pipeline
from tracer.tables import dataset_chunks, datasets, runs


@dataclass(frozen=True)
class Registered:
    run_pk: int
    datasets: list[tuple[Dataset, int, str | None]]  # dataset, its id, its stored fingerprint
    # A classification of the run is readable and no dataset was loaded since: it answers
    # for the data stored (jobs can load a dataset and never classify it).
    current: bool


def ingest_manifest(
    engine: Engine,
    manifest: Manifest,
    progress: Progress | None = None,
    on_classify: Callable[[], None] | None = None,
) -> str:
    """Ingest the run's datasets and classify it in one pass, unless no content changed.

    One process holds every dataset here, so their rows per key stay in local files
    (tracer.chunks.LocalChunks) instead of going through Postgres, and none are stored: if
    any dataset changed, the next post reads them all again.
    """
    with engine.begin() as conn:
        reg = register_run(conn, manifest)
        unchanged = reg.current and all(
            previous is not None and opened(dataset)[1] == previous
            for dataset, _, previous in reg.datasets
        )
        if not unchanged:
            with (
                tempfile.TemporaryDirectory(prefix="tracer-ingest-") as tmp,
                closing(LocalChunks(Path(tmp))) as local,
            ):
                for dataset, dataset_id, _ in reg.datasets:
                    ingest_dataset(
                        conn, reg.run_pk, dataset_id, dataset, manifest.pipeline,
                        progress=progress, local=local,
                    )  # fmt: skip
                if on_classify:
                    on_classify()
                classify_run(conn, reg.run_pk, manifest.pipeline, local)
        else:  # same files: the published classification is the answer
            conn.execute(
                update(datasets)
                .where(datasets.c.run_pk == reg.run_pk)
                .values(status=DatasetStatus.INGESTED, error=None)
            )
            conn.execute(
                update(runs)
                .where(runs.c.pk == reg.run_pk)
                .values(status=RunStatus.CLASSIFIED, error=None)
            )
            if progress:
                for dataset, _, _ in reg.datasets:
                    progress(dataset.name, 0)
    from tracer.openlineage_out import emit_after_classification  # its client loads slowly

    emit_after_classification(engine, run_id=manifest.run_id)  # only when configured
    return manifest.run_id


def register_run(
    conn: Connection, manifest: Manifest, status: RunStatus = RunStatus.INGESTING
) -> Registered:
    """Create or update the run and its datasets; serialised per run id by an advisory lock.

    Every dataset starts this attempt `pending` (what a recovery sweep re-queues), keeping
    the fingerprint of its last successful load so unchanged content is not read again.
    The run's published classification, if any, stays readable until a new one replaces it.
    """
    _lock_text(conn, f"run-id:{manifest.run_id}")
    pipeline_columns = register_pipeline(conn, manifest.pipeline)
    row = conn.execute(
        select(runs.c.pk, runs.c.manifest, runs.c.classified_at)
        .where(runs.c.run_id == manifest.run_id)
        .with_for_update()
    ).first()
    values = {
        **pipeline_columns,
        "label": manifest.label,
        "rerun_of": manifest.rerun_of,
        "manifest": manifest.document,
        "layout": manifest.layout.to_json(),
    }
    if row is None:
        run_pk = conn.execute(
            insert(runs)
            .values(run_id=manifest.run_id, status=status, **values)
            .returning(runs.c.pk)
        ).scalar_one()
    else:
        run_pk = row.pk
        if row.manifest["pipeline"] != manifest.document["pipeline"]:
            raise ConflictError(
                f"run {manifest.run_id!r} was ingested with another definition of pipeline "
                f"{manifest.pipeline.name!r}; delete the run first or give this one a new id"
            )
        conn.execute(
            update(runs).where(runs.c.pk == run_pk).values(status=status, error=None, **values)
        )
    ensure_chunk_partition(conn, run_pk)
    stored = {
        (r.role, r.name): r
        for r in conn.execute(
            select(
                datasets.c.id,
                datasets.c.role,
                datasets.c.name,
                datasets.c.uri,
                datasets.c.fingerprint,
                datasets.c.status,
                datasets.c.ingested_at,
            ).where(datasets.c.run_pk == run_pk)
        )
    }
    out = []
    for d in manifest.datasets:
        old = stored.get((d.role, d.name))
        if old is None:
            dataset_id = conn.execute(
                insert(datasets)
                .values(
                    run_pk=run_pk, name=d.name, role=d.role, uri=d.uri, status=DatasetStatus.PENDING
                )
                .returning(datasets.c.id)
            ).scalar_one()
            out.append((d, dataset_id, None))
        else:
            conn.execute(
                update(datasets)
                .where(datasets.c.id == old.id)
                .values(uri=d.uri, status=DatasetStatus.PENDING, error=None)
            )
            # Set only by a load that committed: safe to skip against (with its chunks, if a
            # job stores them for classification; see ingest_step).
            out.append((d, old.id, old.fingerprint))
    loaded = [r.ingested_at for r in stored.values() if r.ingested_at is not None]
    current = (
        row is not None
        and row.classified_at is not None
        and all(at <= row.classified_at for at in loaded)
    )
    return Registered(run_pk, out, current=current)


@dataclass(frozen=True)
class Submitted:
    run_pk: int
    run_id: str
    dataset_ids: list[int]


def submit_run(engine: Engine, manifest: Manifest) -> Submitted:
    """Register the run for step-by-step ingestion (status `queued`)."""
    with engine.begin() as conn:
        reg = register_run(conn, manifest, status=RunStatus.QUEUED)
    return Submitted(reg.run_pk, manifest.run_id, [dataset_id for _, dataset_id, _ in reg.datasets])


def ingest_step(engine: Engine, dataset_id: int) -> IngestResult:
    """Ingest one dataset of a submitted run in its own transaction (skipped if unchanged)."""
    with engine.begin() as conn:
        _lock(conn, "dataset", dataset_id)
        row = conn.execute(
            select(
                datasets.c.run_pk,
                datasets.c.role,
                datasets.c.name,
                datasets.c.fingerprint,
                datasets.c.key_count,
                datasets.c.status,
            ).where(datasets.c.id == dataset_id)
        ).first()
        if row is None:
            raise NotFoundError(f"dataset {dataset_id} not found (was its run deleted?)")
        manifest = stored_manifest(conn, row.run_pk)
        dataset = next(d for d in manifest.datasets if (d.role, d.name) == (row.role, row.name))
        # Skipping an unchanged dataset reuses its chunks: a one-pass ingestion stored none.
        kept = (
            not row.key_count
            or conn.execute(
                select(dataset_chunks.c.seq)
                .where(
                    dataset_chunks.c.run_pk == row.run_pk, dataset_chunks.c.dataset_id == dataset_id
                )
                .limit(1)
            ).first()
            is not None
        )
        return ingest_dataset(
            conn, row.run_pk, dataset_id, dataset, manifest.pipeline,
            row.fingerprint if kept else None,
        )  # fmt: skip


def classify_step(engine: Engine, run_pk: int) -> None:
    """Classify a run once all its datasets are ingested, in its own transaction."""
    with engine.begin() as conn:
        _lock(conn, "run", run_pk)
        pending = conn.execute(
            select(datasets.c.name, datasets.c.status).where(
                datasets.c.run_pk == run_pk, datasets.c.status != DatasetStatus.INGESTED
            )
        ).all()
        if pending:
            names = ", ".join(f"{r.name} ({r.status})" for r in pending)
            raise TracerError(f"run cannot be classified: datasets not ingested: {names}")
        classify_run(conn, run_pk, stored_manifest(conn, run_pk).pipeline)


def record_failure(engine: Engine, run_pk: int | None, dataset_id: int | None, error: str) -> None:
    """Make a failed step visible: its dataset and its run are marked failed with the message."""
    with engine.begin() as conn:
        if dataset_id is not None:
            conn.execute(
                update(datasets)
                .where(datasets.c.id == dataset_id)
                .values(status=DatasetStatus.FAILED, error=error)
            )
            run_pk = (
                run_pk
                or conn.execute(
                    select(datasets.c.run_pk).where(datasets.c.id == dataset_id)
                ).scalar()
            )
        if run_pk is not None:
            conn.execute(
                update(runs).where(runs.c.pk == run_pk).values(status=RunStatus.FAILED, error=error)
            )


def stored_manifest(conn: Connection, run_pk: int) -> Manifest:
    """The run's manifest as registered (paths already resolved), validated again."""
    document = conn.execute(select(runs.c.manifest).where(runs.c.pk == run_pk)).scalar()
    if document is None:
        raise NotFoundError(f"run {run_pk} not found (was it deleted?)")
    return parse_manifest(document, base_dir=Path("/"), source=f"run {document['run']['id']}")


@dataclass(frozen=True)
class QueuedRun:
    """A run submitted to the workers and not finished: what its jobs should be doing."""

    run_pk: int
    run_id: str
    pending: list[int]  # dataset ids not loaded in this attempt


def queued_runs(engine: Engine, run_id: str | None = None) -> list[QueuedRun]:
    """Runs whose work Postgres says is still to do (the truth a recovery sweep acts on)."""
    query = (
        select(runs.c.pk, runs.c.run_id, datasets.c.id, datasets.c.status)
        .join(datasets, datasets.c.run_pk == runs.c.pk)
        .where(runs.c.status == RunStatus.QUEUED)
        .order_by(runs.c.pk, datasets.c.id)
    )
    if run_id is not None:
        query = query.where(runs.c.run_id == run_id)
    found: dict[int, QueuedRun] = {}
    with engine.connect() as conn:
        for row in conn.execute(query):
            run = found.setdefault(row.pk, QueuedRun(row.pk, row.run_id, []))
            if row.status == DatasetStatus.PENDING:
                run.pending.append(row.id)
    return list(found.values())


def step_running(engine: Engine, kind: str, ident: int) -> bool:
    """Is a step holding the lock of this dataset or run now? Held only inside its
    transaction, so a worker that died (its connection closed) holds nothing."""
    with engine.begin() as conn:
        free = conn.execute(
            text("SELECT pg_try_advisory_xact_lock(hashtext(:k))"), {"k": f"{kind}:{ident}"}
        ).scalar_one()
    return not free


def _lock(conn: Connection, kind: str, ident: int) -> None:
    _lock_text(conn, f"{kind}:{ident}")


def _lock_text(conn: Connection, name: str) -> None:
    """Held until the transaction ends; a second holder waits (hash collisions only serialise)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": name})


def delete_run(engine: Engine, run_id: str) -> None:
    """Drop the run's partitions and rows: constant time whatever its size."""
    with engine.begin() as conn:
        row = conn.execute(
            select(runs.c.pk).where(runs.c.run_id == run_id).with_for_update()
        ).first()
        if row is None:
            raise NotFoundError(f"run {run_id!r} not found")
        drop_run_partitions(conn, row.pk)
        conn.execute(delete(runs).where(runs.c.pk == row.pk))
