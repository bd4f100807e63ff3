"""`tracer graph` and `tracer openlineage ...`: a run's lineage for the tools a data team runs.

Registered by tracer.cli; the core commands' helpers come from tracer.cli_support.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from tracer.cli_support import engine_of, handle_errors, page_options, print_json, print_page
from tracer.errors import TracerError

GRAPH_FORMATS = ("json", "graphml", "dot")


@click.command("graph")
@click.argument("run_id", metavar="RUN")
@click.argument("key", nargs=-1)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(GRAPH_FORMATS),
    default="json",
    show_default=True,
    help="json: Marquez's lineage shape; graphml: Gephi, yEd, networkx; dot: Graphviz.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the graph to this file instead of stdout.",
)
@click.pass_context
@handle_errors
def graph(
    ctx: click.Context, run_id: str, key: tuple[str, ...], fmt: str, output: Path | None
) -> None:
    """The lineage graph of RUN: its stages and datasets with every figure; with KEY (values in
    key-column order), that client's journey through it."""
    from tracer.lineage_graph import FORMATS, journey_graph, run_graph, to_marquez

    with engine_of(ctx).connect() as conn:
        built = journey_graph(conn, run_id, list(key)) if key else run_graph(conn, run_id)
    if fmt == "json":
        text = json.dumps(to_marquez(built), indent=2, default=str) + "\n"
    else:
        text = FORMATS[fmt][1](built)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        raise TracerError(f"--output {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {output} ({built.number_of_nodes()} nodes, {built.number_of_edges()} edges)")


@click.group("openlineage")
def openlineage() -> None:
    """OpenLineage: send a run's stages to Marquez, DataHub..., and runs assembled from events."""


@openlineage.command("emit")
@click.argument("run_id", metavar="RUN")
@click.option(
    "--namespace",
    help="Job namespace of the events (default: OPENLINEAGE_NAMESPACE, else 'tracer').",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the events as JSON lines instead of sending them."
)
@click.pass_context
@handle_errors
def emit(ctx: click.Context, run_id: str, namespace: str | None, dry_run: bool) -> None:
    """Send one COMPLETE RunEvent per stage of RUN, with its reconciliation as a run facet.

    The transport is the OpenLineage client's, configured its usual way: openlineage.yml
    (in the working directory, ~/.openlineage, or at OPENLINEAGE_CONFIG), OPENLINEAGE_URL
    (+ OPENLINEAGE_API_KEY) for HTTP, or OPENLINEAGE__TRANSPORT__* variables.
    """
    from openlineage.client import OpenLineageClient
    from openlineage.client.serde import Serde

    from tracer.openlineage_out import default_namespace, emit_run, run_events

    engine = engine_of(ctx)
    namespace = namespace or default_namespace()
    if dry_run:
        for event in run_events(engine, run_id, namespace):
            click.echo(Serde.to_json(event))
        return
    try:
        client = OpenLineageClient()
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise TracerError(f"OpenLineage client configuration: {exc}") from None
    kind = getattr(client.transport, "kind", "?")
    if kind == "console":  # the console transport logs each event: show them here
        console = logging.getLogger("openlineage.client.transport.console")
        console.setLevel(logging.INFO)
        console.addHandler(logging.StreamHandler(sys.stdout))
    events = emit_run(engine, run_id, namespace, client)
    client.close()
    click.echo(
        f"sent {len(events)} events for run {run_id} (namespace {namespace!r}) "
        f"through the {kind} transport",
        err=kind == "console",
    )


@openlineage.command("pending")
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["pending", "invalid", "queued"]),
    help="Which runs (repeatable; default: pending and invalid).",
)
@page_options(limit=50)
@click.pass_context
@handle_errors
def pending(
    ctx: click.Context,
    pipeline: str | None,
    statuses: tuple[str, ...],
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """Runs assembled from OpenLineage events that are not registered yet, with what each
    still waits for (a stage's or source's output) or why it could not be registered."""
    from tracer.openlineage_in import pending_runs

    with engine_of(ctx).connect() as conn:
        data = pending_runs(conn, pipeline, statuses or ("pending", "invalid"), limit, after)
    print_page(data, as_json, lambda width: _pending_table(data["items"], width))


def _pending_table(items: list[dict[str, Any]], width: int) -> Table:
    table = Table(title="runs assembled from OpenLineage events", caption=None if items else "none")
    table.add_column("run", no_wrap=True)
    for column in ("pipeline", "parent job", "status", "events"):
        table.add_column(column)
    table.add_column("waiting for", overflow="fold", max_width=max(30, width - 90))
    for item in items:
        waiting = [f"{m['role']} {m['name']}: {m['reason']}" for m in item["missing"]]
        parent = item["parent"]
        table.add_row(
            item["run_id"],
            item["pipeline"],
            f"{parent['namespace']}/{parent['name']}" if parent["name"] else "-",
            item["status"],
            str(item["events"]),
            "\n".join(waiting + item["errors"]) or "-",
        )
    return table


@openlineage.command("define")
@click.argument("path", metavar="PIPELINE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@handle_errors
def define(ctx: click.Context, path: Path, as_json: bool) -> None:
    """Register the pipeline definition in PIPELINE (YAML or JSON: a manifest's `pipeline`
    part, or a whole manifest) before any run, so OpenLineage events can assemble its runs."""
    from tracer.openlineage_in import define_pipeline, mapped_jobs

    try:
        text = path.read_text()
    except OSError as exc:
        raise TracerError(f"cannot read {path}: {exc.strerror or exc}") from None
    engine = engine_of(ctx)
    name = define_pipeline(engine, text, str(path))
    jobs = mapped_jobs(engine, name)
    if as_json:
        print_json({"pipeline": name, "jobs": jobs})
        return
    click.echo(f"pipeline {name} registered")
    for job in jobs:
        click.echo(f"  {job['role']} {job['name']} <- {job['namespace']}/{job['job']}")
    if not jobs:
        click.echo("  it maps no OpenLineage job: add `openlineage: {namespace, job}` to stages")
