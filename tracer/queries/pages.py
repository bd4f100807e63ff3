"""Keyset pages, one shape for every list: `{"items": [...], "next": token or null}`.

A token is the sort key of the last item returned, so page N costs what page 1
costs whatever the list's size. It is tied to the list it came from (the
endpoint, the run and the filters): a token used on another list, or forged, is
refused with a clear error instead of answering a wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from tracer.errors import TracerError

MAX_LIMIT = 10_000
"""Items per page of a run's lists (anomalies, gap keys)."""
MAX_PAGE = 500
"""Items per page of the lists across runs (runs, history, pipelines)."""


def check_limit(limit: int, maximum: int = MAX_LIMIT) -> int:
    if not 1 <= limit <= maximum:
        raise TracerError(f"limit must be between 1 and {maximum}")
    return limit


def _scope_digest(scope: Sequence[object]) -> str:
    return hashlib.sha256(json.dumps(list(scope), default=str).encode()).hexdigest()[:12]


def encode_token(scope: Sequence[object], values: Sequence[object]) -> str:
    """An opaque cursor: the last item's sort key, and which list it belongs to."""
    data = json.dumps([_scope_digest(scope), *values], separators=(",", ":"))
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def decode_token(token: str, scope: Sequence[object], types: Sequence[type]) -> list[Any]:
    """The sort key a token carries, checked against the list and the key's types."""
    invalid = TracerError(f"invalid pagination token {token[:64]!r}: use the `next` of this list")
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError, RecursionError):  # `[[[...`: C's decoder refuses it
        raise invalid from None
    if not isinstance(data, list) or len(data) != len(types) + 1:
        raise invalid
    if data[0] != _scope_digest(scope):
        raise TracerError(
            "this pagination token belongs to another list: use the `next` of this one"
        )
    values = data[1:]
    for value, kind in zip(values, types, strict=True):
        if type(value) is not kind or (isinstance(value, str) and "\x00" in value):
            raise invalid
        if kind is int and not -(2**63) <= value < 2**63:
            raise invalid
    return values


def page(
    items: list[Any], last: Sequence[object] | None, scope: Sequence[object], **context: Any
) -> dict[str, Any]:
    """A page: its context (the run, the filters), its items, the token of the next page."""
    return {**context, "items": items, "next": None if last is None else encode_token(scope, last)}
