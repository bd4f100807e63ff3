"""Write docs/cli.md from the commands' own --help, so the reference cannot drift.

Run `python scripts/cli_docs.py`; tests/test_docs.py fails when the file is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.testing import CliRunner

from tracer.cli import main

TARGET = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def _commands(group: click.Group, prefix: list[str]) -> list[list[str]]:
    out = [prefix]
    for name in sorted(group.commands):
        command = group.commands[name]
        if isinstance(command, click.Group):
            out += _commands(command, [*prefix, name])
        else:
            out.append([*prefix, name])
    return out


def render() -> str:
    runner = CliRunner()
    parts = ["# tracer CLI reference", "", "Generated from `--help` by `scripts/cli_docs.py`.", ""]
    for path in _commands(main, []):
        result = runner.invoke(main, [*path, "--help"], prog_name="tracer", terminal_width=100)
        parts += [
            f"## tracer {' '.join(path)}".rstrip(),
            "",
            "```",
            result.output.rstrip(),
            "```",
            "",
        ]
    return "\n".join(parts)


if __name__ == "__main__":
    TARGET.write_text(render())
    sys.stdout.write(f"wrote {TARGET}\n")
