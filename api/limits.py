"""Request limits at the edge: what one request may cost, refused early with the one error body.

* URL and header sizes are checked by a WSGI middleware, before Flask parses anything: a
  JSON 414 / 431 naming the limit, whatever server runs the app (gunicorn's own, larger
  limits stay as the hard bound behind it, see api/gunicorn_worker.py);
* a body larger than its limit is refused with 413 before it is read (manifests
  `TRACER_MAX_BODY_BYTES`, OpenLineage events `TRACER_MAX_EVENT_BYTES`, gzip inflated
  included);
* a JSON body (or an OpenLineage event, read as JSON whatever its type) nested deeper than
  `TRACER_MAX_BODY_DEPTH` is refused with 400 before any parser recurses into it (YAML is
  bounded by tracer.bounded_yaml while it is composed);
* control characters (NUL, CR, LF, ...) in a path or query parameter are refused with
  400 naming the parameter: no run id, key or name holds one, and PostgreSQL cannot even
  store NUL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from api.bodies import TooDeep, TooLarge, inflate, json_nesting_exceeds
from api.errors import error_body
from tracer.config import RequestLimits
from tracer.errors import TracerError
from tracer.limits import CONTROL_CHARACTERS, describe, nul_field

API = "/api/"
EVENT_ENDPOINTS = frozenset({"openlineage.Lineage"})
"""Where OpenLineage events are posted: their own, larger, body limit."""
CONTROL = re.compile(CONTROL_CHARACTERS)
ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
"""`\\u0000` in JSON text: a NUL in a string (not an escaped backslash before `u0000`)."""
NUL_SEARCH = 1_000_000
"""Values an event's NUL search may visit (a JSON event has no aliases: each is read once)."""
MAX_STORED_INT = 2**31 - 1
"""The largest PostgreSQL `integer` (a pipeline version): a path number above it is refused
rather than sent to the database, which would fail on it."""


def init_app(app: Flask, limits: RequestLimits) -> None:
    """Install the limits: the middleware in front of the app, the body checks after the
    token check (a caller without a token costs no body read)."""
    app.config["MAX_CONTENT_LENGTH"] = limits.body_bytes
    app.wsgi_app = EdgeLimits(app.wsgi_app, limits)  # type: ignore[method-assign]
    app.before_request(lambda: check_request(limits))


class EdgeLimits:
    """URL and header sizes, checked on the WSGI environment before Flask sees it."""

    def __init__(self, app: WSGIApplication, limits: RequestLimits) -> None:
        self.app = app
        self.limits = limits

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        refusal = self.refusal(environ)
        if refusal is None:
            return self.app(environ, start_response)
        status, message = refusal
        response = Response(
            _json(error_body(status, message)), status=status, mimetype="application/json"
        )
        return response(environ, start_response)

    def refusal(self, environ: WSGIEnvironment) -> tuple[int, str] | None:
        url = url_bytes(environ)
        if url > self.limits.url_bytes:
            return 414, (
                f"the URL is {url:,} bytes long: this server takes at most "
                f"{self.limits.url_bytes:,} (TRACER_MAX_URL_BYTES); a key or filter this long "
                "cannot be asked for"
            )
        sizes = header_sizes(environ)
        total = sum(sizes.values())
        if total > self.limits.header_bytes:
            largest = max(sizes, key=sizes.__getitem__)
            return 431, (
                f"the request headers are {total:,} bytes: this server takes at most "
                f"{self.limits.header_bytes:,} (TRACER_MAX_HEADER_BYTES); the largest is "
                f"{largest} ({sizes[largest]:,} bytes)"
            )
        return None


def url_bytes(environ: WSGIEnvironment) -> int:
    """The request target as the client sent it (percent-escapes and all)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is not None:
        return len(raw)
    query = environ.get("QUERY_STRING", "")
    return len(environ.get("PATH_INFO", "")) + (len(query) + 1 if query else 0)


def header_sizes(environ: WSGIEnvironment) -> dict[str, int]:
    """Each request header's size on the wire (`Name: value` and its line end), by name."""
    sizes: dict[str, int] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key.removeprefix("HTTP_").replace("_", "-").title()
            sizes[name] = len(name) + len(str(value)) + 4
    return sizes


def check_request(limits: RequestLimits) -> None:
    """Before every view: control characters in the path and query, then the body."""
    _refuse_control_characters()
    if not (request.content_length or request.headers.get("Transfer-Encoding")):
        return
    events = request.endpoint in EVENT_ENDPOINTS
    cap, variable = (
        (limits.event_bytes, "TRACER_MAX_EVENT_BYTES")
        if events
        else (limits.body_bytes, "TRACER_MAX_BODY_BYTES")
    )
    # Werkzeug stops a chunked body at the limit without a word: let one byte more through
    # to tell a body at the limit from one past it.
    request.max_content_length = cap if request.content_length is not None else cap + 1
    limit = f"this server takes at most {cap:,} bytes here ({variable})"
    if request.content_length is not None and request.content_length > cap:
        raise TooLarge(f"the request body is {request.content_length:,} bytes: {limit}")
    if not request.path.startswith(API):
        return  # the pages read forms, within MAX_CONTENT_LENGTH
    try:
        data = request.get_data()  # kept: the view reads this copy
    except RequestEntityTooLarge:
        raise TooLarge(f"the request body is larger than {cap:,} bytes: {limit}") from None
    except Exception as exc:  # the server's own: gunicorn's InvalidChunkSize, NoMoreData, ...
        what = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", type(exc).__name__).lower()  # no bytes repr
        raise TracerError(
            f"the request body could not be read ({what}): send it with a correct "
            "Content-Length or chunked framing"
        ) from None
    if len(data) > cap:
        raise TooLarge(f"the request body is larger than {cap:,} bytes: {limit}")
    if not (request.is_json or events):
        return  # YAML is bounded while it is composed (tracer.bounded_yaml); CSV is flat
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        data = inflate(data, cap) or b""  # not gzip: its reader says so
    if json_nesting_exceeds(data, limits.depth):
        raise TooDeep(limits.depth)
    if events and ESCAPED_NUL.search(data):  # a manifest's NUL is a 422 of api/runs.py
        try:
            field = nul_field(json.loads(data), NUL_SEARCH)
        except ValueError:
            return  # not JSON: the event's reader says so
        if field is not None:
            raise TracerError(
                f"the event's field {field} holds a NUL character (U+0000), which cannot be stored"
            )


def _refuse_control_characters() -> None:
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str) and (found := CONTROL.search(value)):
            raise TracerError(f"path parameter {name} {_holds(found.group())}")
        if isinstance(value, int) and value > MAX_STORED_INT:
            raise TracerError(
                f"path parameter {name} is {value:,}: no stored number is above {MAX_STORED_INT:,}"
            )
    if request.view_args is None and (found := CONTROL.search(request.path)):
        raise TracerError(f"the path {_holds(found.group())}")
    for name, values in request.args.lists():
        if found := CONTROL.search(name):
            raise TracerError(f"a query parameter's name {describe(name)} {_holds(found.group())}")
        for value in values:
            if found := CONTROL.search(value):
                raise TracerError(f"query parameter {name} {_holds(found.group())}")


def _holds(character: str) -> str:
    return (
        f"holds the control character U+{ord(character):04X}: no run id, key, name or filter "
        "may contain one"
    )


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()
