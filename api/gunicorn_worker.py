"""gunicorn's own refusals in the API's one JSON error body.

gunicorn answers some requests before the app sees them: a request line or a header over
its hard limits (414, 431), a malformed request (400). It writes those as an HTML page
through one function, `gunicorn.util.write_error`; this worker class (gthread, as
`tracer serve --threads` uses) replaces that function in its own process, so a client
gets `{"ok": false, "status": 414, ...}` from gunicorn exactly as from the app. The app's
limits (api/limits.py) are set below gunicorn's, so it is the app that normally answers.
"""

from __future__ import annotations

import json
import socket

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from api.errors import error_body

REQUEST_LINE_LIMIT = 8190
"""gunicorn's largest `limit_request_line` (0 would mean unlimited, a memory risk): the hard
bound behind TRACER_MAX_URL_BYTES."""


def write_json_error(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """What gunicorn.util.write_error sends, with the JSON body instead of an HTML page."""
    text = f"{reason} (refused by the HTTP server): {message}" if message else reason
    body = json.dumps(error_body(status, text)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


class JsonErrorWorker(ThreadWorker):
    """gunicorn's threaded worker, answering its own refusals with the JSON error body."""

    def init_process(self) -> None:
        util.write_error = write_json_error
        super().init_process()
