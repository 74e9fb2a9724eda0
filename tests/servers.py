"""Helpers for tests that need their own tracking server or a fresh PostgreSQL database."""

from __future__ import annotations

import glob
import os
import subprocess
import time
import uuid

import pytest

from conftest import free_port, mlflow_dl_cli, set_default_artifacts, wait_http

PG = "postgresql://postgres@127.0.0.1:5432"


def _pg_reachable() -> bool:
    try:
        import psycopg2

        psycopg2.connect(f"{PG}/postgres", connect_timeout=3).close()
        return True
    except Exception:
        return False


@pytest.fixture
def postgres_uri():
    """A fresh, empty PostgreSQL database for this test (dropped after it)."""
    if not _pg_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG} and CI is set: these tests must run in CI")
        pytest.skip(f"no PostgreSQL reachable at {PG} (start it: pg_ctlcluster <version> main start)")
    import psycopg2

    name = f"mlflow_dl_test_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(f"{PG}/postgres")
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.close()


class Server:
    """`mlflow-dl server ...` as a subprocess on a free loopback port; restartable on the same port."""

    def __init__(self, folder, *args, env=None, port=None):
        self.folder, self.args, self.env = folder, list(args), {**os.environ, **(env or {})}
        self.port = port or free_port()
        store = os.path.join(folder, "mlflow.db")
        if "--backend-store-uri" not in self.args and os.path.exists(store):
            # the test's own store (conftest's copy of a new one) is the server's: as on a store the server makes,
            # the Default experiment keeps its artifacts behind the server
            set_default_artifacts(store, "mlflow-artifacts:/0")
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, wait=True):
        self.log = open(os.path.join(self.folder, f"server-{self.port}.log"), "a")
        self.proc = subprocess.Popen(mlflow_dl_cli() + ["server", "--port", str(self.port)] + self.args,
                                     cwd=self.folder, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if wait:
            wait_http(f"{self.url}/health", timeout=90, proc=self.proc)
        return self

    def stop(self):
        """Stopped means every process of the server gone: `mlflow server` exits at once on SIGTERM, while the
        uvicorn it started still answers the requests of open connections until its own shutdown ends."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            deadline = time.time() + 15
            while _group_running(self.proc.pid) and time.time() < deadline:
                time.sleep(0.05)
            if _group_running(self.proc.pid):
                os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.proc = None
        self.log.close()


def _group_running(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (an exited one waiting to be reaped does not)."""
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                state, _, group = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state not in ("Z", "X"):
            return True
    return False
