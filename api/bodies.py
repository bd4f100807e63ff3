"""Request bodies read without trusting their shape.

Python's JSON decoder and PyYAML's composer recurse once per level of nesting, so a body of
100,000 `[` raises RecursionError deep inside a parser (a 500), and a YAML alias bomb of a
few hundred bytes expands into billions of values for whatever walks it next. Here the
nesting of a JSON body is measured on its bytes before any parser sees them, YAML is
composed by a loader that stops at the depth limit, and a gzip body is inflated only up to
the size limit.
"""

from __future__ import annotations

import re
import zlib
from itertools import accumulate
from typing import Any

import yaml

from tracer.errors import TracerError

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
"""Media types a manifest may be posted as YAML with; anything else is read as JSON."""
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


class TooDeep(TracerError):
    """A body nested deeper than the limit: refused before a recursive parser sees it."""

    def __init__(self, limit: int, where: str = "") -> None:
        super().__init__(
            f"the request body is nested more than {limit} levels deep{where}: this server "
            f"reads at most {limit} (TRACER_MAX_BODY_DEPTH)"
        )


class TooLarge(TracerError):
    """A body larger than the limit, once inflated."""

    status = 413


def json_nesting_exceeds(raw: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays and objects more than `limit` deep.

    Strings are cut out first (a `[` inside one is text), then only brackets are walked;
    invalid JSON is left to the parser to describe, so this never raises.
    """
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return False  # even all nested in one another they stay within the limit
    steps = memoryview(brackets.translate(_STEP)).cast("b")  # +1 per opening, -1 per closing
    return max(accumulate(steps)) > limit


def inflate(data: bytes, limit: int) -> bytes | None:
    """A gzip body inflated, at most `limit` bytes of it (every gzip member, as
    `gzip.decompress` reads them); None if it is not gzip, which its reader reports."""
    out = bytearray()
    rest = data
    try:
        while rest:
            member = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += member.decompress(rest, limit + 1 - len(out))
            if len(out) > limit:
                raise TooLarge(
                    f"the request body inflates to more than {limit:,} bytes: this server "
                    f"takes at most {limit:,} (TRACER_MAX_EVENT_BYTES)"
                )
            if not member.eof:
                return None  # cut short: not gzip its reader can take
            rest = member.unused_data.lstrip(b"\0")  # gzip pads members with zeros
    except zlib.error:
        return None
    return bytes(out)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than `max_depth` while composing (the
    composer's recursion), before a document can exhaust the stack."""

    max_depth = 64

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                mark = self.peek_event().start_mark
                raise TooDeep(self.max_depth, f" (line {mark.line + 1}, column {mark.column + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str, max_depth: int) -> Any:
    """One YAML document, safe types only, nested at most `max_depth` deep. Aliases stay
    shared objects: whoever walks the result must bound its walk (manifest.check_size)."""
    loader = _BoundedLoader(text)
    loader.max_depth = max_depth
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
