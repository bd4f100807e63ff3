"""What every `tracer` command shares: the database, the output width, errors, pages.

Apart from tracer.cli so that feature commands can live in modules of their own
(tracer.cli registers them) without importing the command group.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any

import click
from rich.console import Console, RenderableType
from rich.markup import escape
from sqlalchemy import Engine

from tracer import db, render
from tracer.config import Config
from tracer.errors import TracerError

errors = Console(stderr=True)


def output_width(environ: Mapping[str, str] | None = None, tty: bool | None = None) -> int | None:
    """The width tables are laid out for: COLUMNS when set, else the terminal's.

    None when stdout is piped without COLUMNS: then the output is as wide as its widest
    table needs (`render.natural_width`), so a file never gets figures cut to fit 80
    columns. Read on every command, not at import, so COLUMNS set by a caller counts.
    """
    env = os.environ if environ is None else environ
    columns = env.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty() if tty is None else tty:
        return shutil.get_terminal_size().columns
    return None


def show(build: Callable[[int], RenderableType]) -> None:
    """Lay the tables out for the output's width, then print at exactly that width."""
    width = output_width()
    renderable = build(width or render.MAX_WIDTH)
    Console(width=width or render.natural_width(renderable)).print(renderable)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A TracerError: its message and every problem it lists (each naming its field), exit 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TracerError as exc:
            errors.print(
                f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True
            )
            if len(exc.errors) > 1 or exc.errors[0] not in exc.message:
                for line in exc.errors:
                    errors.print(f"  - {escape(line)}", highlight=False, soft_wrap=True)
            sys.exit(2)

    return wrapper


def page_options(limit: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--limit, --next and --json: every list pages the same way."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in (
            click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table."),
            click.option("--next", "after", help="Token from the previous page."),
            click.option("--limit", default=limit, show_default=True, help="Items per page."),
        ):
            fn = option(fn)
        return fn

    return decorate


def engine_of(ctx: click.Context) -> Engine:
    obj = ctx.ensure_object(dict)
    if "engine" not in obj:
        config = Config.from_env()
        engine = db.make_engine(config)
        if config.database_url is None:
            db.upgrade(engine)  # the embedded default is ours to keep current
        obj["engine"] = engine
    return obj["engine"]


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def print_page(data: dict[str, Any], as_json: bool, table: Callable[[int], RenderableType]) -> None:
    """A page as JSON, or as a table with the command for the next page on stderr."""
    if as_json:
        print_json(data)
        return
    show(table)
    if data["next"]:
        errors.print(f"more: --next {data['next']}", highlight=False)
