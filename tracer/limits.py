"""What tracer accepts from a user: the name grammar and the size limits, in one place.

A run id, a pipeline name and a stage or traceability source name end up in URL
paths (`/api/v1/runs/{run_id}`, `/api/v1/pipelines/{name}`), in lineage node ids
(`stage:<pipeline>:<stage>`), in file names a user picks (`tracer graph -o`), in
shell commands tracer prints and in log lines. A name holding `/`, `..`, spaces,
quotes or control characters could be stored but then neither read nor deleted
(`a/../x`), or would break those commands; so names follow one grammar, checked
wherever a name is accepted (manifest parsing, pipeline definitions, OpenLineage
runs, whose ids are UUIDs and so conform).

The limits are generous (far above any real manifest) and exist so a hostile or
broken submission costs a clear refusal, not memory, time or a database error:
a label of 50 MB, a key of 10,000 characters (larger than a B-tree index entry
may be), a manifest whose YAML aliases expand to billions of nodes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$"
"""Run ids, pipeline names, stage and source names: 1-128 characters, a letter or digit
first, then letters, digits and `. _ : @ + -` (so never `/`, `.` or `..`, whitespace, quotes
or control characters)."""

_NAME = re.compile(NAME_PATTERN)

MAX_LABEL = 1_000  # run.label: characters
MAX_COLUMN_NAME = 1_000  # a column name (key, grain, mapped columns): characters
MAX_PATH = 4_096  # a dataset path or URI: characters (PATH_MAX on Linux)
MAX_KEY_COLUMNS = 16  # columns of a composite lineage key
MAX_GRAIN_COLUMNS = 64  # columns of a stage's grain
MAX_STAGES = 1_000  # stages of a pipeline
MAX_SOURCES = 1_000  # traceability sources of a pipeline
MAX_FILES = 20_000  # Parquet files behind one dataset path (folder or glob)
MAX_MANIFEST_BYTES = 4 << 20  # a manifest file or body: 4 MiB
MAX_MANIFEST_NODES = 100_000  # values in a manifest, YAML aliases expanded
MAX_MANIFEST_DEPTH = 64  # nesting of mappings and lists in a manifest

MAX_KEY_BYTES = 1_024
"""A lineage key, as stored (components' canonical text joined by U+001F), in UTF-8 bytes.

Postgres refuses a B-tree index entry over ~2,700 bytes, and the per-key tables index
the key with the stage codes; 1 KiB leaves room for them and is far above real ids."""

CONTROL_CHARACTERS = "[\\x00-\\x1f\\x7f]"
"""A regular expression (RE2 and Python alike) for the characters a key may not hold:
C0 controls (NUL, tab, CR, LF, U+001F, the composite-key separator, ...) and DEL."""


def check_name(value: str) -> str:
    """Refuse a name outside the grammar, saying what the grammar is (pydantic wraps it)."""
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{describe(value)} is not a valid name: use 1-128 letters, digits and . _ : @ + -, "
            "starting with a letter or digit"
        )
    return value


def is_name(value: str) -> bool:
    return _NAME.fullmatch(value) is not None


def describe(value: str, limit: int = 60) -> str:
    """A value quoted for a message, control characters escaped, cut when long."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    suffix = f" ({len(value):,} characters)" if len(value) > limit else ""
    return f"{shown!r}{suffix}"


Name = Annotated[
    str,
    AfterValidator(check_name),
    Field(json_schema_extra={"pattern": NAME_PATTERN, "minLength": 1, "maxLength": 128}),
]
"""A run id, pipeline, stage or traceability source name, in a pydantic model."""

ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_COLUMN_NAME)]
DatasetPath = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH)]
Label = Annotated[str, StringConstraints(max_length=MAX_LABEL)]


def nul_field(data: Any, limit: int) -> str | None:
    """The first field (`run.label`, `pipeline.stages.0.name`) whose key or text holds NUL,
    which PostgreSQL cannot store; None if none does. Walks at most `limit` values, so a
    shared (aliased) or even self-containing structure cannot make it run without bound;
    a field's path is spelled out only once found."""
    Where = tuple[Any, object] | None  # (parent's where, key): a path, linked backwards
    stack: list[tuple[Any, Where]] = [(data, None)]
    for _ in range(limit):
        if not stack:
            return None
        value, where = stack.pop()
        if isinstance(value, str) and "\0" in value:
            return _path(where)
        if isinstance(value, Mapping):
            for key, inner in value.items():
                if isinstance(key, str) and "\0" in key:
                    return _path((where, key)).replace("\0", "\\0")
                stack.append((inner, (where, key)))
        elif isinstance(value, list | tuple):
            stack.extend((v, (where, i)) for i, v in enumerate(value))
    return None


def _path(where: tuple[Any, object] | None) -> str:
    parts: list[str] = []
    while where is not None:
        where, key = where
        parts.append(str(key))
    return ".".join(reversed(parts)) or "the body"
