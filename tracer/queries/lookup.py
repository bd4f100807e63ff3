"""Many clients at once: each key's final outcome, the stage where it left and why.

How a CRM or a campaign tool checks a whole contact list against a run. A batch is at
most MAX_KEYS keys and costs two round trips whatever its size: the encoded keys go as
one array, unnested in the order given and left-joined to the run's `key_outcomes`
(so an unknown key comes back as `not_found`, in place); the reasons of the keys that
left with a trace come in one more query (`explain.reasons_of`). The stage where a key
left is `explain.left_at`, computed once per distinct stored stage pattern of the batch
(a million clients share a few hundred patterns).

Keys are written as users write them: a JSON list whose items are a value (one-column
keys), a list of values in key-column order, or an object by column name; or CSV, whose
first row names the key columns (any other columns are ignored) unless it does not name
them all, in which case every row is a key in key-column order. Every malformed key is
refused before anything is looked up, named by its position (`keys[3]`, `line 5`).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, text

from tracer.errors import TracerError
from tracer.outcomes import Final, parse_stage_cells
from tracer.queries.common import RunInfo
from tracer.queries.explain import left_at, reasons_of
from tracer.queries.key_input import key_values
from tracer.queries.patterns import run_patterns

MAX_KEYS = 10_000
"""Keys in one batch (one request); the CLI splits a longer file into batches of this size."""
NOT_FOUND = "not_found"
"""The final outcome of a key the run has no record of (never in any of its datasets)."""
MAX_LISTED_ERRORS = 20

_FINALS = {f.value: f.label for f in Final}
NO_REASONS: tuple[()] = ()
"""Shared by every answer without reasons (JSON `[]`): one container fewer per key for the
garbage collector to track, whose full passes otherwise cost more than the lookup."""
_OUTCOMES = text(
    """
    SELECT q.key, k.final, k.traced, k.pattern
    FROM unnest(CAST(:keys AS text[])) WITH ORDINALITY AS q(key, i)
    LEFT JOIN key_outcomes AS k ON k.run_pk = :pk AND k.key = q.key COLLATE "C"
    ORDER BY q.i
    """
)


class TooManyKeysError(TracerError):
    """More keys in one request than a batch holds (HTTP 413)."""

    status = 413


def check_count(count: int) -> None:
    if count > MAX_KEYS:
        raise TooManyKeysError(
            f"{count:,} keys in one request; at most {MAX_KEYS:,} are answered at once: "
            "split the list (`tracer where RUN --keys FILE` does)"
        )


def keys_from_json(document: object) -> list[object]:
    """The keys of a body `{"keys": [...]}` (at most MAX_KEYS); the body's shape is checked
    here, each key by `encode_keys`."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise TracerError(
            'the body must be a JSON object {"keys": [...]}: each key a value (one-column '
            "keys), a list of values in key-column order, or an object by column name"
        )
    unknown = sorted(set(document) - {"keys"})
    if unknown:
        raise TracerError(f"unknown field(s) {', '.join(unknown)}: the body holds only `keys`")
    keys: list[object] = document["keys"]
    check_count(len(keys))
    return keys


def csv_rows(lines: Iterable[str], columns: Sequence[str]) -> Iterator[tuple[int, object]]:
    """The keys of CSV text, one a row, as (line number, values in key-column order; the
    value alone for a one-column key).

    A first row naming every key column is a header (other columns are ignored: a contact
    list as exported); otherwise every row, the first too, is a key in key-column order.
    Blank lines are skipped.
    """
    reader = csv.reader(lines)
    picks: list[int] | None = None
    header = False
    last = 0
    for row in _rows(reader):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        line = reader.line_num
        if picks is None:
            names = [cell.strip() for cell in row]
            if set(columns) <= set(names):
                picks = [names.index(c) for c in columns]
                header, last = True, max(picks)
                continue
            picks = list(range(len(columns)))
            if len(row) != len(columns):
                raise TracerError(
                    f"line {line}: the first row neither names the key columns "
                    f"({', '.join(columns)}) nor holds one value per key column: "
                    f"{len(row)} value(s)"
                )
        if not header:
            yield line, row[0] if len(row) == 1 else row  # encode_keys names another arity
        elif len(row) > last:
            yield line, row[picks[0]] if len(picks) == 1 else [row[p] for p in picks]
        else:  # by name, so that encode_keys names the missing column
            yield line, {c: row[p] for c, p in zip(columns, picks, strict=True) if p < len(row)}


def _rows(reader: Any) -> Iterator[list[str]]:
    """The reader's rows; what the csv module refuses (a field over its size limit) named by
    its line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TracerError(f"line {reader.line_num}: not CSV ({exc})") from None
        yield row


def encode_csv(run: RunInfo, lines: Iterable[str], one_batch: bool = False) -> list[str]:
    """The keys of CSV text (`csv_rows`), each as stored, a malformed one named by its line;
    for `one_batch`, more than MAX_KEYS refused before any is encoded."""
    rows = list(csv_rows(lines, run.key))
    if one_batch:
        check_count(len(rows))
    numbers = [line for line, _ in rows]
    return encode_keys(run, [key for _, key in rows], lambda i: f"line {numbers[i]}")


def encode_keys(
    run: RunInfo, keys: Sequence[object], where: Callable[[int], str] = "keys[{}]".format
) -> list[str]:
    """Each key as stored (`run.encode_key`); every malformed one named by `where(its
    index)`, and then nothing is looked up."""
    encoded: list[str] = []
    problems: list[str] = []
    quick = len(run.key) == 1 and run.key_types[0] == "int64"
    for i, key in enumerate(keys):
        if quick and type(key) in (str, int):
            # What keymod.encode makes of one integer (int() trims blanks as it does), a
            # third of its time; whatever int() refuses goes the general way to be named.
            try:
                encoded.append(str(int(key)))  # type: ignore[call-overload]
                continue
            except ValueError:
                pass
        try:
            encoded.append(run.encode_key(_values(run, key)))
        except TracerError as exc:
            problems.append(f"{where(i)}: {exc.message}")
    if problems:
        more = len(problems) - MAX_LISTED_ERRORS
        listed = problems[:MAX_LISTED_ERRORS] + ([f"... and {more} more"] if more > 0 else [])
        raise TracerError(
            f"{len(problems):,} malformed key(s), nothing looked up; first {problems[0]}",
            listed,
        )
    return encoded


def _values(run: RunInfo, key: object) -> list[object]:
    if isinstance(key, Mapping):
        values = key_values(run.key, named=key)
    elif isinstance(key, list):
        values = key
    else:
        values = [key]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TracerError(
                f"a key value is a string or an integer; got {orjson.dumps(value).decode()}"
            )
        if isinstance(value, str) and "\x00" in value:
            raise TracerError("a key value holds a NUL character, which no stored key has")
    return values


def lookup(conn: Connection, run: RunInfo, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Per key (as stored), in the order given: `key`, `final_outcome` (`not_found` for a
    key the run has no record of), `left_at` (`{"stage", "outcome"}`, or null when the key
    did not leave) and `reasons` (logged at that stage, each `{"source", "reason", "rows",
    "reported"}`).

    Reads what one snapshot shows: the caller holds the run's read lock
    (`tracer.partitions.lock_for_reading`) for the call.
    """
    check_count(len(keys))
    if not keys:
        return []
    rows = conn.execute(_OUTCOMES, {"keys": list(keys), "pk": run.pk}).all()
    decode = key_decoder(run)
    index = {name: i for i, name in enumerate(run.stages)}
    patterns = run_patterns(conn, run)
    left: dict[int, tuple[dict[str, str] | None, int]] = {}  # pattern -> left_at, stage
    answers: list[dict[str, Any]] = []
    traced: list[tuple[dict[str, Any], str, int]] = []
    for key, final, was_traced, pattern in rows:
        item = {"key": decode(key), "final_outcome": NOT_FOUND, "left_at": None,
                "reasons": NO_REASONS}  # fmt: skip
        answers.append(item)
        if final is None:
            continue
        item["final_outcome"] = _FINALS[final]
        if pattern not in left:
            where = left_at(run, parse_stage_cells(patterns[pattern]))
            left[pattern] = (where, index[where["stage"]] if where else -1)
        where, stage = left[pattern]
        item["left_at"] = where
        if was_traced and where is not None:
            traced.append((item, key, stage))
    if traced:
        reasons = reasons_of(conn, run, list(dict.fromkeys(key for _, key, _ in traced)))
        for item, key, stage in traced:
            item["reasons"] = reasons.get((key, stage), [])
    return answers


def key_decoder(run: RunInfo) -> Callable[[str], dict[str, object]]:
    """`run.decode_key`, for a one-column key without its general case (a tenth of the
    time of a whole lookup goes there otherwise)."""
    if len(run.key) > 1:
        return run.decode_key
    (name,), (key_type,) = run.key, run.key_types
    if key_type == "int64":
        return lambda text: {name: int(text)}
    return lambda text: {name: text}


# --------------------------------------------------------------------------- answers written


def json_document(
    run: dict[str, Any], total: int, batches: Iterable[list[dict[str, Any]]]
) -> Iterator[bytes]:
    """`{"run", "total", "items": [...], "counts"}` written as the batches come: `total` keys
    asked, `counts` per final outcome (after the items, once they are known)."""
    counts: Counter[str] = Counter()
    yield b'{"run":' + orjson.dumps(run) + b',"total":' + str(total).encode() + b',"items":['
    first = True
    for batch in batches:
        if not batch:
            continue
        counts.update(item["final_outcome"] for item in batch)
        body = orjson.dumps(batch)[1:-1]  # the items without the list's brackets
        yield body if first else b"," + body
        first = False
    ordered = {label: counts[label] for label in (*_FINALS.values(), NOT_FOUND) if counts[label]}
    yield b'],"counts":' + orjson.dumps(ordered) + b"}\n"
