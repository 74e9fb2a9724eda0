"""A sweep of the user's own model-building function: Python, CLI, `mlflow run`, promotion and serving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, all_runs, free_port, mlflow_dl_cli, wait_http
from test_serving import post, split

from mlflow_dl.cli import main
from mlflow_dl.errors import ConfigError

MODELS = '''
import keras


def build(dropout=0.0, l2=0.0, units=4):
    model = keras.Sequential([keras.Input((3,)),
                              keras.layers.Dense(units, activation="relu",
                                                 kernel_regularizer=keras.regularizers.l2(l2)),
                              keras.layers.Dropout(dropout), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def not_compiled(dropout=0.0):
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])


def not_a_model(dropout=0.0):
    return "a string"
'''
GRID = "dropout=0,0.2;l2=0.001,0.01"


@pytest.fixture
def project(tmp_path):
    """my_models.py and train.csv (40 rows, 3 features, a regression target y) in the working directory."""
    (tmp_path / "my_models.py").write_text(MODELS)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(y=x @ [1.0, -2.0, 0.5] + 3)
    frame.to_csv(tmp_path / "train.csv", index=False)
    sys.modules.pop("my_models", None)
    yield frame
    sys.modules.pop("my_models", None)


def _parent_and_children(uri=None):
    runs = all_runs(uri)
    (parent,) = [r for r in runs if r.data.tags.get("mlflow_dl.family") == "custom"
                 and "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def _check_sweep(parent, children, client):
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert {(c.data.params["trial.dropout"], c.data.params["trial.l2"]) for c in children} == \
        {("0", "0.001"), ("0", "0.01"), ("0.2", "0.001"), ("0.2", "0.01")}
    assert all(c.info.status == "FINISHED" and np.isfinite(c.data.metrics["best_val_loss"]) for c in children)
    assert not any(k.startswith("model.") and k != "model.total_params" for c in children for k in c.data.params)
    best = min(children, key=lambda c: c.data.metrics["model_val_loss"])  # the data loss ranks (l2 in the grid)
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.params["sweep.build"] == "my_models:build"
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/val_loss_vs_dropout.png", "plots/val_loss_vs_l2.png", "plots/val_loss_curves.png"} <= figures


def test_python_sweep_of_arrays_and_of_a_dataframe(project):
    from mlflow_dl import sweep_model

    frame = project
    x, y = frame[["a", "b", "c"]].to_numpy(), frame["y"].to_numpy()
    result = sweep_model("my_models:build", {"dropout": [0, 0.2], "l2": [0.001, 0.01]}, (x, y), epochs=2,
                         progress=False)
    parent, children = _parent_and_children()
    assert result.parent_run_id == parent.info.run_id and result.best_run_id == parent.data.tags["best_run_id"]
    _check_sweep(parent, children, mlflow.MlflowClient())
    assert len(result.table) == 4 and {"dropout", "l2", "best_val_loss"} <= set(result.table.columns)

    import my_models

    other = sweep_model(my_models.build, {"units": [2, 3]}, frame, target="y", epochs=1, progress=False,
                        experiment="frame")
    run = mlflow.get_run(other.best_run_id)
    assert run.data.params["trial.units"] in ("2", "3") and run.data.params["data.target"] == "y"
    assert mlflow.get_run(other.parent_run_id).data.params["sweep.build"] == "my_models:build"


def test_python_sweep_of_a_tf_data_dataset_reads_the_same_rows(project):
    import tensorflow as tf

    from mlflow_dl import sweep_model

    frame = project
    x, y = frame[["a", "b", "c"]].to_numpy(), frame["y"].to_numpy()

    def key(result):
        assert list(result.table["status"]) == ["FINISHED"] * len(result.table), result.table.to_string()
        return mlflow.get_run(result.best_run_id).data.tags["mlflow_dl.comparability_key"]

    def sweep(data, **kwargs):
        return sweep_model("my_models:build", {"units": [2, 3]}, data, epochs=1, progress=False, **kwargs)

    # the key hashes the rows: a Dataset, batched or not, gives the sweep the rows its arrays would
    assert key(sweep(tf.data.Dataset.from_tensor_slices((x, y)).batch(8))) == key(sweep((x, y)))
    columns = tf.data.Dataset.from_tensor_slices((dict(frame[["a", "b", "c"]]), frame["y"]))
    assert key(sweep(columns)) == key(sweep(frame, target="y")) == key(sweep(columns.batch(16)))

    with pytest.raises(ConfigError, match="two tf.data.Datasets is not supported"):
        sweep((tf.data.Dataset.from_tensor_slices((x, y)),) * 2)
    with pytest.raises(ConfigError, match=r"expected \(features, target\) elements of a table"):
        sweep(tf.data.Dataset.from_tensor_slices(x))


def test_cli_sweep_custom(project, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "custom", "--model", "my_models:build", "--grid", GRID, "--data", "train.csv",
              "--target", "y", "--epochs", "2"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "best run" in out
    parent, children = _parent_and_children()
    _check_sweep(parent, children, mlflow.MlflowClient())


@pytest.mark.parametrize("model, grid, message", [
    ("no_such_module:build", GRID, "model='no_such_module:build' does not import (ModuleNotFoundError"),
    ("my_models:nope", GRID, "model='my_models:nope' does not import (AttributeError"),
    ("my_models", GRID, "model='my_models' is invalid; expected package.module:function"),
    ("my_models:not_compiled", "dropout=0", "returned a keras.Model that is not compiled"),
    ("my_models:not_a_model", "dropout=0", "returned str for {'dropout': 0}; expected a compiled keras.Model"),
    ("my_models:build", "dropout=0;momentum=0.9", "grid key(s) momentum are not arguments of model='my_models:build'"),
    ("my_models:build", "dropout", "grid='dropout' is invalid at 'dropout'; expected key=v1,v2"),
])
def test_bad_input_is_one_line_exit_2_before_any_run(project, capsys, model, grid, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "custom", "--model", model, "--grid", grid, "--data", "train.csv", "--target", "y",
              "--epochs", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert all_runs() == []


def test_a_function_defined_here_runs_inline_only(project):
    from mlflow_dl import sweep_model

    def build(units=2):
        raise AssertionError("not reached")

    with pytest.raises(ConfigError, match="cannot be imported by name"):
        sweep_model(build, {"units": [2]}, "train.csv", target="y", workers=2)
    assert all_runs() == []


@pytest.mark.slow
def test_two_worker_processes_import_the_function_by_name(project):
    from mlflow_dl import sweep_model

    result = sweep_model("my_models:build", {"units": [2, 3, 4]}, "train.csv", target="y", epochs=1, workers=2,
                         progress=False)
    parent = mlflow.get_run(result.parent_run_id)
    assert parent.data.params["sweep.executor"] == "processes" and parent.info.status == "FINISHED"
    assert list(result.table["status"]) == ["FINISHED"] * 3, result.table.to_string()


@pytest.mark.slow
def test_mlflow_run_custom_entry_point_against_a_server(project, tmp_path, mlflow_server):
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    before = {r.info.run_id for r in all_runs(mlflow_server)}
    cmd = [sys.executable, "-m", "mlflow", "run", REPO, "-e", "custom", "--env-manager", "local",
           "--experiment-name", "custom-projects", "-P", "model=my_models:build", "-P", f"grid={GRID}",
           "-P", f"data={tmp_path / 'train.csv'}", "-P", "target=y", "-P", "epochs=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = [r for r in all_runs(mlflow_server) if r.info.run_id not in before]
    (parent,) = [r for r in new if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags["mlflow.project.entryPoint"] == "custom"
    children = [r for r in new if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    _check_sweep(parent, children, mlflow.MlflowClient(mlflow_server))


@pytest.mark.slow
def test_promote_the_best_trial_and_serve_raw_rows(project, tmp_path, tracking_store):
    from mlflow_dl import sweep_model
    from mlflow_dl.registry.promotion import promote

    result = sweep_model("my_models:build", {"units": [2, 4]}, "train.csv", target="y", epochs=2, progress=False)
    promoted = promote("mlflow-dl", "custom-model", parent_run_id=result.parent_run_id)
    assert promoted.run_id == result.best_run_id and promoted.moved

    port = free_port()
    proc = subprocess.Popen(mlflow_dl_cli() + ["serve", "--model-name", "custom-model", "--port", str(port)],
                            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_store}, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/ping", timeout=180, proc=proc)
        rows = project[["a", "b", "c"]].head(5)
        status, body = post(url, split(rows))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # mlflow-dl serve and the scoring server it started
        proc.wait()
    assert status == 200, body
    served = pd.DataFrame(body["predictions"])
    local = mlflow.pyfunc.load_model(f"runs:/{result.best_run_id}/model").predict(rows)
    assert len(served) == 5
    np.testing.assert_allclose(served.to_numpy(dtype=float), np.asarray(local, dtype=float).reshape(served.shape),
                               rtol=1e-5)
