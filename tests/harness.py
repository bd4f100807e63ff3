"""Starting a real `tracer serve` process: what the tests and the benchmarks both need.

Test code, so not in the wheel or the image; bench/common.py imports it from here.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import make_server


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (chosen by the OS)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[Any], timeout: float) -> None:
    """Poll `url` until it answers 200; RuntimeError if `process` exits or `timeout` s pass."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:  # refused while starting, or an HTTP error status
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout:g} s")
        time.sleep(0.1)


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app behind a real HTTP server on a free loopback port, in a thread, for a block."""
    server = make_server(host="127.0.0.1", port=0, app=app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
