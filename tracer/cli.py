"""The `tracer` command: readable tables by default, `--json` for scripts.

Errors tracer understands (bad manifest, unreadable file, unknown run) print
one clear message and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine

from tracer import cli_investigate, cli_lineage, cli_lookup, db, render
from tracer.cli_support import (
    engine_of,
    errors,
    handle_errors,
    page_options,
    print_json,
    print_page,
    show,
)
from tracer.config import Config
from tracer.errors import TracerError
from tracer.manifest import load_manifest
from tracer.model import DatasetStatus, Manifest, RunStatus
from tracer.queries.pages import MAX_LIMIT


def _plugin(group: str, name: str) -> Any:
    """A command or backend that lives outside the core (the API, the rq workers)."""
    for entry in entry_points(group=group):
        if entry.name == name:
            return entry.load()
    raise TracerError(f"{name!r} is not installed (entry point group {group!r})")


class _Commands(click.Group):
    """The core's commands plus those plugged in through the `tracer.commands` entry points."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        plugged = [e.name for e in entry_points(group="tracer.commands")]
        return sorted({*super().list_commands(ctx), *plugged})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        entry = next((e for e in entry_points(group="tracer.commands") if e.name == name), None)
        return entry.load() if entry is not None else None


@click.group(cls=_Commands)
@click.version_option(package_name="tracer")
@click.pass_context
def main(ctx: click.Context) -> None:
    """tracer: where did every client of a pipeline run go?"""
    ctx.ensure_object(dict)


@main.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.pass_context
@handle_errors
def db_upgrade(ctx: click.Context) -> None:
    """Apply migrations up to the latest schema."""
    engine = engine_of(ctx)
    db.upgrade(engine)
    click.echo(f"schema at revision {db.current_revision(engine)}")


@db_group.command("stop")
@handle_errors
def db_stop() -> None:
    """Stop the embedded PostgreSQL (only used when DATABASE_URL is unset)."""
    from tracer.embedded import stop_embedded

    stopped = stop_embedded(Config.from_env().home)
    click.echo("embedded database stopped" if stopped else "no embedded database running")


@main.command()
@click.argument(
    "manifest_path", metavar="MANIFEST", type=click.Path(dir_okay=False, path_type=Path)
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--wait", is_flag=True, help="With REDIS_URL: wait until the run is classified.")
@click.pass_context
@handle_errors
def ingest(ctx: click.Context, manifest_path: Path, as_json: bool, wait: bool) -> None:
    """Ingest a run's datasets from MANIFEST and classify every client.

    With REDIS_URL set the work is queued for `tracer worker` processes and the
    job ids are printed; otherwise it runs here, in one transaction.
    """
    from tracer.pipelines import pipeline_lookup

    engine = engine_of(ctx)
    manifest = load_manifest(manifest_path, lookup=pipeline_lookup(engine))
    config = Config.from_env()
    if not config.redis_url:
        run_id = _ingest_with_progress(engine, manifest, quiet=as_json)
        _reconciliation(engine, run_id, as_json)
        return
    from tracer.store import submit_run

    submitted = submit_run(engine, manifest)
    job_ids = _plugin("tracer.dispatchers", "queue")(config).submit(submitted).as_dict()
    if as_json and not wait:
        print_json({"run_id": submitted.run_id, "status": RunStatus.QUEUED, "job_ids": job_ids})
        return
    if not as_json:
        click.echo(f"queued run {submitted.run_id}: ingest jobs {', '.join(job_ids['ingest'])}")
        click.echo(f"classify job {job_ids['classify']}")
    if wait:
        _wait_for(engine, submitted.run_id, len(submitted.dataset_ids), quiet=as_json)
        _reconciliation(engine, submitted.run_id, as_json)


def _wait_for(engine: Engine, run_id: str, datasets: int, quiet: bool, poll: float = 0.5) -> None:
    """Poll the run until it is classified or failed, with a progress bar."""
    from tracer.queries.catalog import run_detail

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=errors, disable=quiet) as bar:
        task = bar.add_task(f"waiting for run {run_id}", total=datasets + 1)
        while True:
            with engine.connect() as conn:
                detail = run_detail(conn, run_id)
            finished = (DatasetStatus.INGESTED, DatasetStatus.FAILED)
            done = sum(d["status"] in finished for d in detail["datasets"])
            bar.update(task, completed=done + (detail["status"] == RunStatus.CLASSIFIED))
            if detail["status"] == RunStatus.FAILED:
                raise TracerError(f"run {run_id} failed: {detail['error']}")
            if detail["status"] == RunStatus.CLASSIFIED:
                return
            time.sleep(poll)


def _ingest_with_progress(engine: Engine, manifest: Manifest, quiet: bool) -> str:
    from tracer.store import ingest_manifest

    if quiet:
        return ingest_manifest(engine, manifest)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=errors, transient=False) as bar:
        task = bar.add_task(
            f"ingesting run {manifest.run_id}", total=len(manifest.datasets) + 1, rows=0
        )

        def advanced(name: str, rows: int) -> None:
            bar.update(task, advance=1, rows=bar.tasks[task].fields["rows"] + rows)

        def classifying() -> None:
            bar.update(task, description=f"classifying run {manifest.run_id}")

        run_id = ingest_manifest(engine, manifest, progress=advanced, on_classify=classifying)
        bar.update(task, completed=len(manifest.datasets) + 1, description=f"run {run_id} ready")
    return run_id


def _reconciliation(engine: Engine, run_id: str, as_json: bool) -> None:
    from tracer.queries.reconciliation import reconciliation

    with engine.connect() as conn:
        data = reconciliation(conn, run_id)
    if as_json:
        print_json(data)
    else:
        show(lambda width: render.report(data, width))


@main.command()
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
@handle_errors
def reconciliation(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Reconciliation of RUN: per-stage outcomes, run totals and the gap explained."""
    _reconciliation(engine_of(ctx), run_id, as_json)


@main.command()
@click.argument("run_id", metavar="RUN")
@click.argument("key", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
@handle_errors
def journey(ctx: click.Context, run_id: str, key: tuple[str, ...], as_json: bool) -> None:
    """Where did client KEY go in RUN? (KEY values in key-column order)"""
    from tracer.queries.journey import journey as key_journey

    with engine_of(ctx).connect() as conn:
        data = key_journey(conn, run_id, list(key))
    if as_json:
        print_json(data)
    else:
        show(lambda width: render.journey(data, width))


@main.command()
@click.argument("key", nargs=-1, required=True)
@click.option("--pipeline", help="Only runs of this pipeline.")
@page_options(limit=50)
@click.pass_context
@handle_errors
def history(
    ctx: click.Context,
    key: tuple[str, ...],
    pipeline: str | None,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """Every run client KEY appears in, newest first, with its final outcome there and the
    stage where it left."""
    from tracer.queries.journey import history as key_history

    with engine_of(ctx).connect() as conn:
        data = key_history(conn, list(key), pipeline, limit, after)
    print_page(data, as_json, lambda width: render.history(data, width))


@main.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "--outcome",
    required=True,
    help="Outcome or flag to list (e.g. orphaned, multiplied, grain_violation).",
)
@click.option("--stage", help="Only this stage.")
@cli_investigate.csv_option
@page_options(limit=100)
@click.pass_context
@handle_errors
def anomalies(
    ctx: click.Context,
    run_id: str,
    outcome: str,
    stage: str | None,
    as_csv: bool,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """List the keys of RUN with an anomalous outcome, page by page: each with its rows, the
    reasons logged there and its final outcome."""
    from tracer.queries.anomalies import anomalies as list_anomalies
    from tracer.queries.common import load_run

    with engine_of(ctx).connect() as conn:
        if as_csv:
            key = list(load_run(conn, run_id).key)
            cli_investigate.print_csv(
                "anomalies",
                key,
                lambda token: list_anomalies(conn, run_id, outcome, stage, MAX_LIMIT, token),
            )
            return
        data = list_anomalies(conn, run_id, outcome, stage, limit, after)
    print_page(data, as_json, lambda width: render.anomaly_list(data, width))


@main.command("gap-keys")
@click.argument("run_id", metavar="RUN")
@click.argument("cell")
@click.option("--reporting", is_flag=True, help="The reporting gap's cells.")
@click.option("--stage", help="Only the keys whose cause is at this stage.")
@click.option("--outcome", help="Only the keys whose cause has this outcome (e.g. orphaned).")
@click.option("--keys", "keys_only", is_flag=True, help="Only the keys, one a line (for pipes).")
@cli_investigate.csv_option
@page_options(limit=100)
@click.pass_context
@handle_errors
def gap_keys(
    ctx: click.Context,
    run_id: str,
    cell: str,
    reporting: bool,
    stage: str | None,
    outcome: str | None,
    keys_only: bool,
    as_csv: bool,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """The keys of RUN behind one CELL of the gap (e.g. lost, counted_twice), in cause order:
    each with its cause (the stage and outcome that put it there), the reasons logged there
    and its final outcome. --stage/--outcome keep one cause."""
    from tracer.queries.anomalies import gap_keys as cell_keys
    from tracer.queries.common import load_run

    def fetch(conn: Any, token: str | None, size: int = limit) -> dict[str, Any]:
        return cell_keys(conn, run_id, cell, reporting, size, token, stage, outcome)

    with engine_of(ctx).connect() as conn:
        if as_csv:
            key = list(load_run(conn, run_id).key)
            cli_investigate.print_csv("gap_keys", key, lambda t: fetch(conn, t, MAX_LIMIT))
            return
        data = fetch(conn, after)
    if keys_only and not as_json:
        for item in data["items"]:  # one key a line, for scripts and pipes
            click.echo(render.key_text(item["key"]))
        if data["next"]:
            errors.print(f"more: --next {data['next']}", highlight=False)
        return
    print_page(data, as_json, lambda width: render.gap_keys(data, width))


@main.command()
@click.argument("run_id", metavar="RUN")
@click.pass_context
@handle_errors
def delete(ctx: click.Context, run_id: str) -> None:
    """Delete RUN and everything derived from it."""
    from tracer.store import delete_run

    delete_run(engine_of(ctx), run_id)
    click.echo(f"deleted run {run_id}")


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the demo's Parquet files (default: a temporary folder).",
)
@click.option("--client", type=int, help="Whose journey to show (default: a planted anomaly).")
@click.pass_context
@handle_errors
def demo(ctx: click.Context, directory: Path | None, client: int | None) -> None:
    """Build a 7-stage campaign run over real bank clients, ingest it, show what tracer finds."""
    from tracer.demo import build_demo

    with _workdir(directory) as folder:
        manifest_path = build_demo(folder)
        engine = engine_of(ctx)
        manifest = load_manifest(manifest_path)
        run_id = _ingest_with_progress(engine, manifest, quiet=False)
        _reconciliation(engine, run_id, as_json=False)
        from tracer.queries.journey import journey as key_journey

        key = client if client is not None else _demo_client(folder)
        with engine.connect() as conn:
            data = key_journey(conn, run_id, [key])
        click.echo()
        show(lambda width: render.journey(data, width))
        click.echo(  # commands to copy: never wrapped
            f"\nnext: tracer journey {run_id} <client_id> · "
            f"tracer anomalies {run_id} --outcome orphaned"
        )


def _demo_client(folder: Path) -> int:
    """A client the demo planted an anomaly on: one multiplied by the enrichment join."""
    from tracer.demo import planted

    return min(planted(folder)["offer_enrichment"]["multiplied"])


@contextmanager
def _workdir(directory: Path | None) -> Iterator[Path]:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        yield directory
        return
    with tempfile.TemporaryDirectory(prefix="tracer-demo-") as tmp:
        yield Path(tmp)


main.add_command(cli_lineage.graph)
main.add_command(cli_lineage.openlineage)
main.add_command(cli_lookup.where)
for command in cli_investigate.COMMANDS:
    main.add_command(command)
