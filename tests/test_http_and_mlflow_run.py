"""The HTTP path against a real `mlflow server`, and `mlflow run` entry points."""

import os
import subprocess
import sys

import mlflow
import pytest

from conftest import REPO, all_runs
from mlflow_dl.config import FitSpec, ModelSpec, TrialSpec
from mlflow_dl.families.train import train


def test_train_against_a_real_tracking_server(mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    result = train(TrialSpec(model=ModelSpec(hidden="8"), fit=FitSpec(epochs=2, patience=None)), experiment="http")
    # a second client sees everything
    client = mlflow.MlflowClient(mlflow_server)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(result.run_id, "val_loss")) == 2
    names = {f.path for f in client.list_artifacts(result.run_id, "checkpoints")}
    assert names == {"checkpoints/best.keras"}
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    assert model.metadata.metadata["mlflow_dl"]["input_columns"][:2] == ["mean radius", "mean texture"]


def mlflow_run(entry, params, env):
    cmd = [sys.executable, "-m", "mlflow", "run", REPO, "-e", entry, "--env-manager", "local",
           "--experiment-name", "projects"]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "http"])
def test_mlflow_run_train_logs_into_the_run_mlflow_run_created(store, tracking_store, mlflow_server):
    uri = tracking_store if store == "sqlite" else mlflow_server
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    before = {r.info.run_id for r in all_runs(uri)}
    proc = mlflow_run("train", {"dataset": "breast_cancer", "epochs": 2, "hidden": "8"}, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = [r for r in all_runs(uri) if r.info.run_id not in before]
    assert len(new) == 1, "mlflow run and the code must share one run"
    (run,) = new
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.entryPoint"] == "train"
    assert run.data.tags["mlflow_dl.family"] == "train"
    assert "best_val_loss" in run.data.metrics and run.data.params["model.hidden"] == "8"
