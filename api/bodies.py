"""Request bodies read without trusting their shape.

Python's JSON decoder recurses once per level of nesting, so a body of 100,000 `[` raises
RecursionError deep inside the parser (a 500). Here the nesting of a JSON body is measured
on its bytes before any parser sees them (YAML is composed by tracer.bounded_yaml, which
stops at the depth limit itself), and a gzip body is inflated only up to the size limit.
"""

from __future__ import annotations

import re
import zlib
from itertools import accumulate

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
