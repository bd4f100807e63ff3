"""The `tracer` command: readable tables by default, `--json` for scripts.

Errors tracer understands (bad manifest, unreadable file, unknown run) print
one clear message and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine

from tracer import db, render
from tracer.config import Config
from tracer.errors import TracerError
from tracer.manifest import Manifest, load_manifest

# Reconciliation tables are wide: give pipes and CI logs room instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True)


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TracerError as exc:
            errors.print(f"[bold red]error:[/] {exc.message}", highlight=False)
            for line in exc.errors if len(exc.errors) > 1 else []:
                errors.print(f"  - {line}", highlight=False)
            sys.exit(2)

    return wrapper


def _engine(ctx: click.Context) -> Engine:
    obj = ctx.ensure_object(dict)
    if "engine" not in obj:
        config: Config = obj.get("config") or Config.from_env()
        engine = db.make_engine(config)
        if config.database_url is None:
            db.upgrade(engine)  # the embedded default is ours to keep current
        obj["engine"] = engine
    return obj["engine"]


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


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
@_handle_errors
def db_upgrade(ctx: click.Context) -> None:
    """Apply migrations up to the latest schema."""
    engine = _engine(ctx)
    db.upgrade(engine)
    click.echo(f"schema at revision {db.current_revision(engine)}")


@db_group.command("stop")
@_handle_errors
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
@_handle_errors
def ingest(ctx: click.Context, manifest_path: Path, as_json: bool, wait: bool) -> None:
    """Ingest a run's datasets from MANIFEST and classify every client.

    With REDIS_URL set the work is queued for `tracer worker` processes and the
    job ids are printed; otherwise it runs here, in one transaction.
    """
    from tracer.runs import pipeline_lookup

    engine = _engine(ctx)
    manifest = load_manifest(manifest_path, lookup=pipeline_lookup(engine))
    config = ctx.obj.get("config") or Config.from_env()
    if not config.redis_url:
        run_id = _ingest_with_progress(engine, manifest, quiet=as_json)
        _report(engine, run_id, as_json)
        return
    from tracer.runs import submit_run

    submitted = submit_run(engine, manifest)
    job_ids = _plugin("tracer.dispatchers", "queue")(config).submit(submitted).as_dict()
    if as_json and not wait:
        _print_json({"run_id": submitted.run_id, "status": "queued", "job_ids": job_ids})
        return
    if not as_json:
        click.echo(f"queued run {submitted.run_id}: ingest jobs {', '.join(job_ids['ingest'])}")
        click.echo(f"classify job {job_ids['classify']}")
    if wait:
        _wait_for(engine, submitted.run_id, len(submitted.dataset_ids), quiet=as_json)
        _report(engine, submitted.run_id, as_json)


def _wait_for(engine: Engine, run_id: str, datasets: int, quiet: bool, poll: float = 0.5) -> None:
    """Poll the run until it is classified or failed, with a progress bar."""
    from tracer.queries.runs import run_detail

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
            done = sum(d["status"] in ("ingested", "failed") for d in detail["datasets"])
            bar.update(task, completed=done + (detail["status"] == "classified"))
            if detail["status"] == "failed":
                raise TracerError(f"run {run_id} failed: {detail['error']}")
            if detail["status"] == "classified":
                return
            time.sleep(poll)


def _ingest_with_progress(engine: Engine, manifest: Manifest, quiet: bool) -> str:
    from tracer.runs import ingest_manifest

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


def _report(engine: Engine, run_id: str, as_json: bool) -> None:
    from tracer.queries.reconciliation import reconciliation

    with engine.connect() as conn:
        data = reconciliation(conn, run_id)
    if as_json:
        _print_json(data)
    else:
        console.print(render.report(data))


@main.command()
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
@_handle_errors
def report(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Reconciliation of RUN: per-stage outcomes, run totals and the gap explained."""
    _report(_engine(ctx), run_id, as_json)


@main.command()
@click.argument("run_id", metavar="RUN")
@click.argument("key", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
@_handle_errors
def where(ctx: click.Context, run_id: str, key: tuple[str, ...], as_json: bool) -> None:
    """Where did client KEY go in RUN? (KEY values in key-column order)"""
    from tracer.queries.journey import journey

    with _engine(ctx).connect() as conn:
        data = journey(conn, run_id, list(key))
    if as_json:
        _print_json(data)
    else:
        console.print(render.journey(data))


@main.command()
@click.argument("key", nargs=-1, required=True)
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
@_handle_errors
def history(ctx: click.Context, key: tuple[str, ...], pipeline: str | None, as_json: bool) -> None:
    """Every run client KEY appears in, with its final outcome there."""
    from tracer.queries.journey import history as key_history

    with _engine(ctx).connect() as conn:
        data = key_history(conn, list(key), pipeline)
    if as_json:
        _print_json(data)
        return
    for run in data["runs"]:
        console.print(
            f"{run['run_id']}\t{run['pipeline']}\t{run['final_outcome']}", highlight=False
        )


@main.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "--outcome", help="Outcome or flag to list (e.g. orphaned, multiplied, grain_violation)."
)
@click.option("--stage", help="Only this stage.")
@click.option("--cell", help="List the keys behind a gap cell instead (e.g. lost, counted_twice).")
@click.option("--reporting", is_flag=True, help="With --cell: the reporting gap's cells.")
@click.option("--limit", default=100, show_default=True, help="Items per page.")
@click.option("--next", "after", help="Token from the previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
@_handle_errors
def anomalies(
    ctx: click.Context,
    run_id: str,
    outcome: str | None,
    stage: str | None,
    cell: str | None,
    reporting: bool,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """List the keys of RUN with an anomalous outcome, page by page."""
    from tracer.queries.anomalies import anomalies as list_anomalies
    from tracer.queries.anomalies import gap_keys

    if (outcome is None) == (cell is None):
        raise TracerError("give exactly one of --outcome or --cell")
    with _engine(ctx).connect() as conn:
        if cell is not None:
            data = gap_keys(conn, run_id, cell, reporting, limit, after)
        else:
            assert outcome is not None
            data = list_anomalies(conn, run_id, outcome, stage, limit, after)
    if as_json:
        _print_json(data)
        return
    if cell is not None:
        for key in data["items"]:
            console.print(render.key_text(key), highlight=False)
    else:
        console.print(render.anomaly_list(data))
    if data["next"]:
        errors.print(f"more: --next {data['next']}", highlight=False)


@main.command()
@click.argument("run_id", metavar="RUN")
@click.pass_context
@_handle_errors
def delete(ctx: click.Context, run_id: str) -> None:
    """Delete RUN and everything derived from it."""
    from tracer.runs import delete_run

    delete_run(_engine(ctx), run_id)
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
@_handle_errors
def demo(ctx: click.Context, directory: Path | None, client: int | None) -> None:
    """Build a 7-stage campaign run over real bank clients, ingest it, show what tracer finds."""
    from tracer.demo import build_demo

    with _workdir(directory) as folder:
        manifest_path = build_demo(folder)
        engine = _engine(ctx)
        manifest = load_manifest(manifest_path)
        run_id = _ingest_with_progress(engine, manifest, quiet=False)
        _report(engine, run_id, as_json=False)
        from tracer.queries.journey import journey

        key = client if client is not None else _demo_client(folder)
        with engine.connect() as conn:
            console.print(render.journey(journey(conn, run_id, [key])))
        console.print(
            f"\nnext: tracer where {run_id} <client_id> · "
            f"tracer anomalies {run_id} --outcome orphaned",
            highlight=False,
        )


def _demo_client(folder: Path) -> int:
    from tracer.demo import PLANTED

    multiplied = PLANTED.get("offer_enrichment", {}).get("multiplied") or next(
        ids for stage in PLANTED.values() for ids in stage.values() if ids
    )
    return min(multiplied)


@contextmanager
def _workdir(directory: Path | None) -> Iterator[Path]:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        yield directory
        return
    with tempfile.TemporaryDirectory(prefix="tracer-demo-") as tmp:
        yield Path(tmp)
