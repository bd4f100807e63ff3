"""`tracer serve`: the API under gunicorn, or Flask's development server with --dev."""

from __future__ import annotations

import os
import sys

import click

from tracer import logs
from tracer.cli_support import handle_errors
from tracer.config import Config


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    "processes",
    type=int,
    help="gunicorn processes (default: GUNICORN_WORKERS or 2; 1 without REDIS_URL)",
)
@click.option("--dev", is_flag=True, help="Flask's development server (reloads, one process).")
@handle_errors
def serve(host: str, port: int, processes: int | None, dev: bool) -> None:
    """Run the REST API (gunicorn when installed)."""
    config = Config.from_env()
    if not config.api_tokens:
        click.secho(
            "WARNING: TRACER_API_TOKENS is not set: the API is OPEN to anyone who can reach "
            f"{host}:{port}. Set read:/ingest:/admin: tokens before exposing it.",
            fg="red",
            bold=True,
            err=True,
        )
    if not config.redis_url:
        click.echo("REDIS_URL is not set: jobs run in this process (one at a time).", err=True)
    roots = ", ".join(str(r) for r in config.roots)
    click.echo(f"manifests may name paths under: {roots}", err=True)
    logs.configure(config.log_format, config.log_level)  # TRACER_LOG_FORMAT: json or text
    from api import create_app

    if dev:
        create_app(config).run(host=host, port=port, debug=True)
        return
    try:
        from gunicorn.app.wsgiapp import run as gunicorn_run

        from api.gunicorn_worker import REQUEST_LINE_LIMIT
    except ImportError:
        click.echo("gunicorn is not installed: using the development server", err=True)
        create_app(config).run(host=host, port=port)
        return
    # Without Redis the jobs live in the serving process: keep it to one process.
    count = (processes or int(os.environ.get("GUNICORN_WORKERS", "2"))) if config.redis_url else 1
    # gunicorn's limits sit above the app's (api/limits.py), so the app answers 414/431 with
    # its JSON body naming the setting; gunicorn's stay as the hard bound behind them, and
    # its own refusals are JSON too (api/gunicorn_worker.py).
    sys.argv = [
        "gunicorn", "--bind", f"{host}:{port}", "--workers", str(count),
        "--threads", "4", "--config", "python:api.gunicorn_conf",
        "--worker-class", "api.gunicorn_worker.JsonErrorWorker",
        "--limit-request-line", str(REQUEST_LINE_LIMIT),
        "--limit-request-field_size", str(2 * config.limits.header_bytes),
        "api:create_app()",
    ]  # fmt: skip
    gunicorn_run()
