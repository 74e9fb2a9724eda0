"""A real `mlflow server` on a free loopback port for the benchmarks (SQLite or PostgreSQL backend)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float) -> None:
    """Poll `url` until it answers; fail if `proc` exits or `timeout` seconds pass first."""
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{what} did not start")
            time.sleep(0.3)


@contextlib.contextmanager
def mlflow_server(backend: str | None = None):
    with tempfile.TemporaryDirectory() as root:
        port = free_port()
        backend = backend or f"sqlite:///{root}/mlflow.db"
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", backend, "--artifacts-destination", f"{root}/artifacts", "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/health", proc, "mlflow server", timeout=120)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(60)  # a busy 2-core machine: the server's shutdown has taken over 15 s
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
