"""`tracer compare`, `tracer runs`, `tracer pipelines` and `tracer jobs`: the commands of an
investigation across runs. Registered by tracer.cli; shared plumbing from tracer.cli_support.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import click
from sqlalchemy import Connection

from tracer import render
from tracer.cli_support import (
    engine_of,
    handle_errors,
    page_options,
    print_json,
    print_page,
    show,
)
from tracer.config import Config
from tracer.errors import TracerError
from tracer.queries.csv_lists import csv_chunks, every_page
from tracer.queries.pages import MAX_LIMIT, MAX_PAGE


def print_csv(
    kind: str, key_columns: list[str], fetch: Callable[[str | None], dict[str, Any]]
) -> None:
    """Every page of a list as CSV on stdout, a header row first (an empty list too)."""
    for chunk in csv_chunks(kind, key_columns, every_page(fetch)):
        click.echo(chunk, nl=False)


csv_option = click.option("--csv", "as_csv", is_flag=True, help="Print the whole list as CSV.")


@click.command("compare")
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@click.option(
    "--cell",
    nargs=2,
    metavar="A_FINAL B_FINAL",
    help="List the keys of one cell: final outcome in RUN_A, then in RUN_B (or absent).",
)
@click.option("--all", "every", is_flag=True, help="With --cell --json: every page as one list.")
@csv_option
@page_options(limit=100)
@click.pass_context
@handle_errors
def compare(
    ctx: click.Context,
    run_a: str,
    run_b: str,
    cell: tuple[str, str] | None,
    every: bool,
    as_csv: bool,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """Compare two runs of one pipeline (a run and its rerun, two marketing solutions):
    final outcomes in A against B, how many clients changed, the change per stage and
    outcome, and where changed clients first differ. With --cell, the keys of one cell."""
    from tracer.queries.compare import compare as summary
    from tracer.queries.compare import compare_keys, pair

    with engine_of(ctx).connect() as conn:
        if cell is None:
            if every or as_csv:
                raise TracerError("--all and --csv list the keys of a cell: give --cell A B")
            data = summary(conn, run_a, run_b)
            if as_json:
                print_json(data)
            else:
                show(lambda width: render.comparison(data, width))
            return

        def fetch(token: str | None, size: int = limit) -> dict[str, Any]:
            return compare_keys(conn, run_a, run_b, cell[0], cell[1], size, token)

        if as_csv:
            key = list(pair(conn, run_a, run_b).a.key)
            print_csv("compare_keys", key, lambda token: fetch(token, MAX_LIMIT))
        elif every:
            print_json([i for p in every_page(lambda t: fetch(t, MAX_LIMIT)) for i in p["items"]])
        else:
            data = fetch(after)
            print_page(data, as_json, lambda width: render.compare_keys(data, width))


@click.command("runs")
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option("--broken", is_flag=True, help="Only runs that do not reconcile.")
@click.option("--since", help="Created at or after (ISO date or time).")
@click.option("--until", help="Created before (ISO date or time).")
@click.option(
    "--sort",
    type=click.Choice(["distance", "newest"]),
    default="distance",
    show_default=True,
    help="distance: furthest from reconciling first.",
)
@click.option(
    "--stuck",
    is_flag=True,
    help="Only queued runs that no live job will finish, and why (needs REDIS_URL); "
    "`tracer resume` queues their work again.",
)
@csv_option
@page_options(limit=50)
@click.pass_context
@handle_errors
def runs(
    ctx: click.Context,
    pipeline: str | None,
    broken: bool,
    since: str | None,
    until: str | None,
    sort: str,
    stuck: bool,
    as_csv: bool,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """Runs with their headline figures (entered, targeted, traced, gaps, keys per anomaly
    outcome) and why each does not reconcile: which marketing solutions are broken, and how."""
    from tracer.queries.catalog import list_runs

    if stuck:  # the recovery sweep's diagnosis, without acting: it lives with the workers
        resume = next(
            (e for e in entry_points(group="tracer.commands") if e.name == "resume"), None
        )
        if resume is None:
            raise TracerError("the workers are not installed (entry point 'resume')")
        ctx.invoke(resume.load(), run_id=None, dry_run=True, as_json=as_json)
        return

    reconciles = False if broken else None

    def fetch(conn: Connection, token: str | None, size: int = limit) -> dict[str, Any]:
        return list_runs(
            conn, pipeline, None, None, size, token, reconciles, since, until, sort
        )  # fmt: skip

    with engine_of(ctx).connect() as conn:
        if as_csv:
            print_csv("runs", [], lambda token: fetch(conn, token, MAX_PAGE))
            return
        data = fetch(conn, after)
    print_page(data, as_json, lambda width: render.runs(data, width))


@click.command("pipelines")
@page_options(limit=50)
@click.pass_context
@handle_errors
def pipelines(ctx: click.Context, limit: int, after: str | None, as_json: bool) -> None:
    """Registered pipelines: key, stages, number of runs, last run."""
    from tracer.pipelines import list_pipelines

    with engine_of(ctx).connect() as conn:
        data = list_pipelines(conn, limit, after)
    print_page(data, as_json, lambda width: render.pipelines(data, width))


@click.command("jobs")
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
@handle_errors
def jobs(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """The queue's jobs of RUN (one per dataset, and the classification) and their status.
    Needs REDIS_URL: without it, jobs run inside `tracer serve` and only it knows them."""
    from tracer.queries.catalog import run_jobs

    config = Config.from_env()
    if not config.redis_url:
        raise TracerError(
            "REDIS_URL is not set: jobs then run inside `tracer serve`, which answers "
            "GET /api/v1/runs/{run_id} with each dataset's status"
        )
    dispatcher = _dispatcher(config)
    with engine_of(ctx).connect() as conn:
        plan = run_jobs(conn, run_id)
    found = []
    for part in plan["jobs"]:
        job_id = (
            dispatcher.classify_job_id(plan["run_pk"])
            if part["dataset_id"] is None
            else dispatcher.ingest_job_id(part["dataset_id"])
        )
        status = dispatcher.status(job_id)
        found.append(
            {
                "id": job_id,
                "for": part["for"],
                "status": status["status"] if status else "missing",
                "error": status.get("error") if status else None,
                "enqueued_at": status.get("enqueued_at") if status else None,
                "ended_at": status.get("ended_at") if status else None,
            }
        )
    data = {"run": plan["run"], "jobs": found}
    if as_json:
        print_json(data)
    else:
        show(lambda width: render.jobs(data, width))


def _dispatcher(config: Config) -> Any:
    """The queue's dispatcher (workers, through its entry point: the core imports no rq)."""
    entry = next((e for e in entry_points(group="tracer.dispatchers") if e.name == "queue"), None)
    if entry is None:
        raise TracerError("the queue is not installed (entry point group 'tracer.dispatchers')")
    dispatcher = entry.load()(config)
    if not hasattr(dispatcher, "ingest_job_id"):
        raise TracerError("this dispatcher does not name jobs by dataset and run")
    return dispatcher


COMMANDS = (compare, runs, pipelines, jobs)
