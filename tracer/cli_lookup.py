"""`tracer where RUN --keys FILE`: a whole list of clients checked against a run.

The CLI side of `POST /api/v1/runs/{run_id}/clients/lookup`, for a file of any length:
every key is read and checked first (a malformed one names its line, exit 2, nothing
printed), then they are looked up MAX_KEYS at a time, each batch in a transaction of its
own, and the answers printed as each batch comes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import IO, Any

import click
from sqlalchemy import Engine

from tracer.cli_support import engine_of, handle_errors
from tracer.errors import TracerError
from tracer.partitions import lock_for_reading
from tracer.queries import lookup as core
from tracer.queries.common import RunInfo, load_run
from tracer.queries.csv_lists import csv_chunks
from tracer.queries.explain import logged
from tracer.render import key_text


@click.command("where")
@click.argument("run_id", metavar="RUN")
@click.option(
    "--keys",
    "keys_file",
    required=True,
    type=click.File("r", encoding="utf-8-sig"),
    help="CSV whose header row names the key columns (other columns are ignored), or one "
    "key a line in key-column order, comma-separated; - reads standard input.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON object instead.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: a header row, a row per key.")
@click.pass_context
@handle_errors
def where(ctx: click.Context, run_id: str, keys_file: IO[str], as_json: bool, as_csv: bool) -> None:
    """Where did each client of a list go in RUN? Per key, in the file's order: its final
    outcome (not_found when RUN has no record of it), the stage where it left and the
    reasons logged there. Any number of keys, looked up 10,000 at a time."""
    if as_json and as_csv:
        raise TracerError("--json and --csv: choose one")
    engine = engine_of(ctx)
    with engine.connect() as conn:
        lock_for_reading(conn)
        run = load_run(conn, run_id)
    encoded = core.encode_csv(run, keys_file)
    batches = _batches(engine, run, encoded)
    if as_json:
        for chunk in core.json_document(run.header(), len(encoded), batches):
            click.echo(chunk, nl=False)
    elif as_csv:
        for text in csv_chunks("lookup", run.key, ({"items": b} for b in batches)):
            click.echo(text, nl=False)
    else:
        _table(run, len(encoded), batches)


def _batches(engine: Engine, run: RunInfo, keys: list[str]) -> Iterator[list[dict[str, Any]]]:
    """The answers, MAX_KEYS keys a transaction; refused if RUN is classified again meanwhile
    (the answers would mix two classifications)."""
    for start in range(0, len(keys), core.MAX_KEYS):
        with engine.connect() as conn:
            lock_for_reading(conn)
            now = load_run(conn, run.run_id)
            if (now.pk, now.classified_at) != (run.pk, run.classified_at):
                raise TracerError(
                    f"run {run.run_id!r} was classified again while its keys were looked up "
                    f"({start:,} answered): run the command again"
                )
            yield core.lookup(conn, run, keys[start : start + core.MAX_KEYS])


def _table(run: RunInfo, total: int, batches: Iterator[list[dict[str, Any]]]) -> None:
    """One aligned line per key (columns sized per batch), then the count per final outcome."""
    click.echo(f"run {run.run_id} ({run.pipeline}): {total:,} key(s)")
    counts: Counter[str] = Counter()
    heading = ("/".join(run.key), "final outcome", "left at", "reasons there")
    for batch in batches:
        rows = [_row(item) for item in batch]
        widths = [max(len(row[c]) for row in [heading, *rows]) for c in range(3)]
        for row in rows if counts else [heading, *rows]:
            cells = [text.ljust(width) for text, width in zip(row, widths, strict=False)]
            click.echo("  ".join([*cells, row[3]]).rstrip())
        counts.update(item["final_outcome"] for item in batch)
    click.echo(", ".join(f"{label} {n:,}" for label, n in counts.most_common()) or "no keys")


def _row(item: dict[str, Any]) -> tuple[str, str, str, str]:
    where = item["left_at"]
    if where is None:
        return key_text(item["key"]), item["final_outcome"], "-", ""
    left = f"{where['stage']} ({where['outcome']})"
    return key_text(item["key"]), item["final_outcome"], left, logged(item["reasons"])
