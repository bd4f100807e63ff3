"""Starting a real `tracer serve` process: what the tests and the benchmarks both need.

Test code, so not in the wheel or the image; bench/common.py imports it from here.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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


@contextmanager
def tracer_serve(
    env: dict[str, str], stderr: Path, *args: str, timeout: float = 30
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`tracer serve` (gunicorn) on a free loopback port with `env`, its stderr in a file;
    yields the process and the port once /health answers, and stops it (SIGTERM, then
    SIGKILL) after the block."""
    port = free_port()
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tracer", "serve", "--host", "127.0.0.1", "--port", str(port),
             *args],
            env=env, stdout=subprocess.DEVNULL, stderr=sink,
        )  # fmt: skip
    try:
        try:
            wait_healthy(f"http://127.0.0.1:{port}/api/v1/health", process, timeout=timeout)
        except RuntimeError as exc:
            raise AssertionError(f"server did not start: {exc}\n{stderr.read_text()}") from None
        yield process, port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
