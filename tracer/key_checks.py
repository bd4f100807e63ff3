"""Key values ingestion refuses: too long to index, or holding control characters.

A key over MAX_KEY_BYTES cannot be indexed by Postgres (the classification would
fail with a B-tree error naming no file); a control character makes keys that
look equal differ (a trailing tab, CR from a Windows export), and U+001F would
make a composite key ambiguous (docs/semantics.md#keys). One DuckDB pass over the
key columns finds whether any row is at fault; only then are the files read again
to name the first offending file and row, so good data pays one scan, not two.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from tracer import keys as keymod
from tracer.errors import IngestError
from tracer.limits import CONTROL_CHARACTERS, MAX_KEY_BYTES, describe
from tracer.model import Dataset

_CONTROL = re.compile(CONTROL_CHARACTERS)
_ROW = "__tracer_row"


def check_key_values(
    con: duckdb.DuckDBPyConnection,
    source: ds.Dataset,
    dataset: Dataset,
    key_types: Sequence[str],
) -> None:
    """Raise IngestError naming the file, column and row of the first bad key value.

    `con` has `source` (the files of `dataset`) registered as `src`; `key_types` are the
    pipeline's (string values under an int64 key have been checked to be integers).
    """
    name, uri, columns = dataset.name, dataset.uri, dataset.key_columns
    strings = [c for c in columns if keymod.type_family(source.schema.field(c).type) == "string"]
    if not strings:
        return  # integers: at most 20 characters a component, and no control characters
    # One aggregate over the raw values (an aggregate keeps every core busy, where a
    # `LIMIT 1` filter does not): raw length bounds the trimmed key's length from above.
    lengths = " + ".join(
        [f"coalesce(strlen({keymod.quote_ident(c)}), 0)" for c in strings]
        + [str(21 * (len(columns) - len(strings)) + len(columns) - 1)]
    )
    suspect = " OR ".join([f"{lengths} > {MAX_KEY_BYTES}", *_controls(strings)])
    if not con.execute(f"SELECT coalesce(bool_or({suspect}), false) FROM src").fetchall()[0][0]:
        return
    key = keymod.duckdb_key(columns, key_types)
    exact = " OR ".join([f"coalesce(strlen({key}), 0) > {MAX_KEY_BYTES}", *_controls(strings)])
    for fragment in source.get_fragments():
        table = fragment.to_table(schema=source.schema, columns=list(columns))
        rows = pa.array(range(table.num_rows), pa.int64())
        con.register("tracer_part", table.append_column(_ROW, rows))
        try:
            found = con.execute(
                f"SELECT {_ROW}, {', '.join(keymod.quote_ident(c) for c in columns)} "
                f"FROM tracer_part WHERE {exact} ORDER BY {_ROW} LIMIT 1"
            ).fetchall()
        finally:
            con.unregister("tracer_part")
        if found:
            values = dict(zip(columns, found[0][1:], strict=True))
            raise _refusal(name, uri, fragment.path, found[0][0] + 1, values, strings)
    # Long only before trimming: the stored key is within the limit.


def _controls(strings: Sequence[str]) -> list[str]:
    return [
        f"coalesce(regexp_matches({keymod.quote_ident(c)}, '{CONTROL_CHARACTERS}'), false)"
        for c in strings
    ]


def _refusal(
    name: str,
    uri: str,
    path: str,
    row: int,
    values: dict[str, object],
    strings: Sequence[str],
) -> IngestError:
    for column in strings:
        value = values[column]
        if isinstance(value, str) and (bad := _CONTROL.search(value)):
            return IngestError(
                name,
                uri,
                f"row {row:,} of {path}: value {describe(value)} holds the control character "
                f"U+{ord(bad.group()):04X}; a key may not hold control characters "
                "(NUL, tab, CR, LF, U+001F, ...)",
                column,
            )
    column = max(strings, key=lambda c: len(str(values[c] or "").encode()))
    value = str(values[column])
    return IngestError(
        name,
        uri,
        f"row {row:,} of {path}: value {describe(value)} makes a key of "
        f"{len(value.encode()):,} bytes; a key may have at most {MAX_KEY_BYTES:,} bytes",
        column,
    )
