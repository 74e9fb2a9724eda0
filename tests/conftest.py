"""Real MLflow for every test: a fresh SQLite store each, a real server for HTTP paths."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# every `mlflow server` a test starts would spawn MLflow 3's job runner and half a dozen huey consumers
# (GenAI jobs: scorers, trace roll-ups), each importing MLflow: CPU and memory no test here uses
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


def pytest_collection_modifyitems(items):
    """The slow end-to-end tests first: the workers then share out the many short ones at the end, instead of
    one worker starting a minutes-long test while the other has nothing left (order is kept within each kind)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_sessionfinish(session):
    """Measured by coverage.py through COVERAGE_PROCESS_START (README, "Tests and benchmarks"): save this
    process's data now, since xdist kills a worker still exiting 10 s after the run, before coverage's own save."""
    if os.environ.get("COVERAGE_PROCESS_START"):
        import coverage

        if (cov := coverage.Coverage.current()) is not None:
            cov.save()


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory):
    """A new SQLite store with MLflow's schema, made once per worker. Each test's store is a copy of it:
    MLflow's migrations of a new file cost about a second of CPU, in whichever process opens it first."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("empty-store")
    SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "mlruns")).engine.dispose()
    return folder / "mlflow.db"


def set_default_artifacts(db, location: str) -> None:
    """Where the Default experiment of the SQLite store `db` keeps its artifacts, as MLflow sets it when it makes
    the store; left as it is once a run was logged there."""
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0"
                    " AND NOT EXISTS (SELECT 1 FROM runs WHERE experiment_id = 0)", (location,))


def new_store(empty_store, folder) -> str:
    """`folder`/mlflow.db: an empty store, as MLflow makes it for a process whose working folder is `folder`
    (the Default experiment keeps its artifacts in `folder`/mlruns/0)."""
    db = folder / "mlflow.db"
    shutil.copyfile(empty_store, db)
    set_default_artifacts(db, str(folder / "mlruns" / "0"))
    return f"sqlite:///{db}"


@pytest.fixture(autouse=True)
def tracking_store(tmp_path, monkeypatch, empty_store):
    """Each test: its own folder and SQLite store (a copy of a new one; `no_store` for a test that needs
    none yet); fails if it leaks an active run."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = new_store(empty_store, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    # unset (empty), and back to unset after the test: a CLI command run in-process claims it
    monkeypatch.setenv("MLFLOW_DL_GRAPPLER", "")
    mlflow.set_tracking_uri(uri)
    yield uri
    leaked = mlflow.active_run()
    while mlflow.active_run():
        mlflow.end_run("KILLED")
    mlflow.set_tracking_uri(None)
    # mlflow.set_experiment() exports MLFLOW_EXPERIMENT_ID and remembers it: forget both
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(var, None)
    mlflow.tracking.fluent._active_experiment_id = None
    assert leaked is None, f"test leaked an active run {leaked.info.run_id}"


@pytest.fixture
def no_store(tracking_store, tmp_path):
    """The test's store not made yet, as on a fresh machine: for a test of what makes it, or must not."""
    (tmp_path / "mlflow.db").unlink()
    return tracking_store


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite backend, proxied artifacts) on a free loopback port."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=90, proc=proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def all_runs(uri: str | None = None):
    """Every run of every experiment in the store, as MLflow entities."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=1000) if ids else []


def artifact_paths(client, run_id: str, path: str = "") -> list[str]:
    """Every artifact file of a run, recursively."""
    out = []
    for f in client.list_artifacts(run_id, path):
        out.extend(artifact_paths(client, run_id, f.path) if f.is_dir else [f.path])
    return out


def mlflow_dl_cli() -> list[str]:
    exe = shutil.which("mlflow-dl", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "mlflow_dl"]
