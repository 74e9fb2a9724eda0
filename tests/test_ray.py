"""Sweeps on a real local Ray cluster (started and stopped here), logging to a shared tracking server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import mlflow
import pandas as pd
import pytest

from conftest import all_runs, free_port, mlflow_dl_cli
from servers import Server

pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
# one Ray cluster at a time: its agents take fixed default ports (dashboard agent, client server)
pytestmark = pytest.mark.xdist_group("ray")

SWEEP = ["sweep", "dropout", "--rates", "0,0.3", "--epochs", "2", "--hidden", "8", "--patience", "none"]


def test_the_ray_tests_run_on_one_worker(request):
    """pytest-xdist tags a test of an xdist_group as `<id>@<group>` and gives each group to one worker. With
    pytest 9.2 it no longer can (pytest-xdist#1386) and spreads the group without a word: two Ray clusters
    at once then collide on their fixed ports, and every module-scoped fixture of a group is built twice."""
    if getattr(request.config.option, "loadgroup", False):  # a pytest-xdist worker under --dist loadgroup
        assert request.node.nodeid.endswith("@ray"), (
            f"{request.node.nodeid}: pytest-xdist did not group it; pyproject.toml pins a pytest that it can group")


@pytest.fixture
def ray_cluster():
    """`ray start --head` on 127.0.0.1 with 2 CPUs, in its own session, so only its processes are stopped."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's unix socket paths must stay short
    ray = shutil.which("ray", path=os.path.dirname(os.sys.executable))
    log = open(os.path.join(temp, "start.log"), "w")
    proc = subprocess.Popen([ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
                             "--num-cpus", "2", "--include-dashboard", "false", "--temp-dir", temp,
                             "--disable-usage-stats"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while "Ray runtime started" not in open(os.path.join(temp, "start.log")).read():
            assert proc.poll() is None and time.time() < deadline, open(os.path.join(temp, "start.log")).read()
            time.sleep(0.5)
        yield address
    finally:
        # the whole cluster at once (`ray start`, its GCS server, raylet, agents): no orphans. Not SIGTERM: on it
        # `ray start --block` drains for up to 30 s, for tasks this test no longer has
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _table(client, experiment):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    rows = [{"name": r.info.run_name, "status": r.info.status, "best_val_loss": r.data.metrics.get("best_val_loss"),
             "epochs": len(client.get_metric_history(r.info.run_id, "val_loss")),
             "error": r.data.tags.get("mlflow_dl.error", ""),
             "grappler": r.data.params.get("tensorflow_grappler")} for r in children]
    return [r for r in runs if not r.data.tags.get("mlflow.parentRunId")], pd.DataFrame(rows).sort_values("name")


@pytest.mark.slow
def test_ray_sweep_logs_to_the_shared_server_and_equals_inline(tmp_path, ray_cluster):
    server = Server(tmp_path).start()
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url}
    try:
        for executor, experiment in (("ray", "on-ray"), ("inline", "inline")):
            out = subprocess.run(mlflow_dl_cli() + SWEEP + ["--executor", executor, "--ray-address", ray_cluster,
                                                            "--experiment", experiment],
                                 cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
            assert out.returncode == 0, out.stderr[-3000:]
        client = mlflow.MlflowClient(server.url)
        (ray_parent,), on_ray = _table(client, "on-ray")
        _, inline = _table(client, "inline")
        assert ray_parent.data.params["sweep.executor"] == "ray" and ray_parent.info.status == "FINISHED"
        assert list(on_ray["name"]) == list(inline["name"]) == ["dropout=0", "dropout=0.3"]
        assert set(on_ray["status"]) == {"FINISHED"} and list(on_ray["epochs"]) == [2, 2], on_ray.to_string()
        assert on_ray["best_val_loss"].notna().all() and inline["best_val_loss"].notna().all(), on_ray.to_string()
        # the CLI's choice (tf_runtime) reaches the Ray tasks as it reaches this process's own trials
        assert set(on_ray["grappler"]) == set(inline["grappler"]) == {"off"}
        pd.testing.assert_series_equal(on_ray["best_val_loss"].reset_index(drop=True),
                                       inline["best_val_loss"].reset_index(drop=True), rtol=1e-3)
    finally:
        server.stop()


def test_ray_executor_refuses_a_local_store_before_any_run(tmp_path, no_store):
    out = subprocess.run(mlflow_dl_cli() + SWEEP + ["--executor", "ray"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "tracking_uri=" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "mlflow.db").exists() or not all_runs()


@pytest.mark.slow
def test_ray_sweep_of_your_own_model_imports_it_by_name(tmp_path, ray_cluster):
    from test_custom_sweep import MODELS

    (tmp_path / "my_models.py").write_text(MODELS)
    rows = pd.DataFrame({"a": range(30), "b": [i % 7 for i in range(30)], "c": [i % 3 for i in range(30)]})
    rows.assign(y=rows.a * 0.1 - rows.b).to_csv(tmp_path / "train.csv", index=False)
    server = Server(tmp_path).start()
    try:
        out = subprocess.run(mlflow_dl_cli() + ["sweep", "custom", "--model", "my_models:build", "--grid",
                                                "units=2,3", "--data", "train.csv", "--target", "y", "--epochs", "2",
                                                "--executor", "ray", "--ray-address", ray_cluster],
                             cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": server.url},
                             capture_output=True, text=True, timeout=400)
        assert out.returncode == 0, out.stderr[-3000:]
        client = mlflow.MlflowClient(server.url)
        (parent,), children = _table(client, "mlflow-dl")
        assert parent.data.params["sweep.executor"] == "ray" and parent.data.params["sweep.build"] == "my_models:build"
        assert list(children["name"]) == ["units=2", "units=3"] and set(children["status"]) == {"FINISHED"}, \
            children.to_string()
        assert list(children["epochs"]) == [2, 2] and children["best_val_loss"].notna().all()
    finally:
        server.stop()


@pytest.mark.slow
def test_pruning_on_ray_tasks(tmp_path, ray_cluster):
    """Ray tasks open the sweep's study (a journal file beside the runs) and prune as the other executors."""
    from mlflow_dl.tags import PRUNED_TAG

    server = Server(tmp_path).start()
    try:
        out = subprocess.run(mlflow_dl_cli() + ["sweep", "learning_rate", "--lrs", "0.01,0.003,5", "--hidden", "8",
                                                "--epochs", "4", "--patience", "none", "--prune", "--prune-warmup",
                                                "1", "--prune-startup", "1", "--executor", "ray", "--ray-address",
                                                ray_cluster], cwd=tmp_path, capture_output=True, text=True,
                             timeout=600, env={**os.environ, "MLFLOW_TRACKING_URI": server.url})
        assert out.returncode == 0, out.stderr[-3000:]
        client = mlflow.MlflowClient(server.url)
        (parent,), _ = _table(client, "mlflow-dl")
        assert parent.data.params["sweep.executor"] == "ray"
        (diverging,) = [r for r in client.search_runs([parent.info.experiment_id])
                        if r.info.run_name == "lr=5"]
        assert diverging.info.status == "FINISHED" and 1 <= int(diverging.data.tags[PRUNED_TAG]) < 3
        assert (tmp_path / ".mlflow-dl" / "pruning" / f"{parent.info.run_id}.log").exists()
    finally:
        server.stop()
