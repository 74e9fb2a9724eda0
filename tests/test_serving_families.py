"""Served over HTTP = in process, for a multi-input and a time-series champion (real `mlflow models serve`)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from conftest import free_port, wait_http
from mlflow_dl.cli import main
from mlflow_dl.config import FitSpec, ModelSpec
from mlflow_dl.registry.promotion import promote
from mlflow_dl.families import sweep

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def served(model_uri, tracking_uri, cwd):
    """The plain command the README shows, on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager",
                             "local", "-h", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/ping", timeout=180, proc=proc)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def post(url, frame):
    body = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
    req = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return pd.DataFrame(json.loads(resp.read())["predictions"])


def test_multi_input_champion_served_equals_in_process(tracking_store, tmp_path):
    result = sweep("multi_input", model=ModelSpec(hidden=(4,)), fit=FitSpec(epochs=1, patience=None),
                   groups="mean *;worst *;* error", branch_units="4", progress=False)
    promote("mlflow-dl", "mi-champion", parent_run_id=result.parent_run_id)
    rows = load_breast_cancer(as_frame=True).frame.drop(columns="target").sample(20, random_state=1)
    local = mlflow.pyfunc.load_model("models:/mi-champion@champion").predict(rows)
    with served("models:/mi-champion@champion", tracking_store, tmp_path) as url:
        remote = post(url, rows)
    np.testing.assert_allclose(remote["probability"], local["probability"], atol=1e-6)
    assert list(remote["class"]) == list(local["class"])


def test_time_series_champion_served_equals_in_process(tracking_store, tmp_path):
    n = 90
    t = np.arange(n)
    frame = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
                          "price": 10 + np.sin(t / 3) + t * 0.05, "volume": 100.0 + (t % 7),
                          "oil": 50 + np.cos(t / 5)})
    frame.to_csv(tmp_path / "prices.csv", index=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["rnn-vs-lstm", "--dataset", str(tmp_path / "prices.csv"), "--target", "price", "--date-column",
              "date", "--cells", "lstm", "--timesteps", "6", "--units", "4", "--epochs", "2", "--patience", "none"])
    assert exit_info.value.code == 0
    parent = mlflow.search_runs(search_all_experiments=True, filter_string="tags.mlflow_dl.family = 'rnn_vs_lstm'",
                                output_format="list")
    parent_id = next(r.info.run_id for r in parent if "mlflow.parentRunId" not in r.data.tags)
    promote("mlflow-dl", "ts-champion", parent_run_id=parent_id)
    raw = frame.drop(columns=["date"]).tail(10)
    local = mlflow.pyfunc.load_model("models:/ts-champion@champion").predict(raw)
    with served("models:/ts-champion@champion", tracking_store, tmp_path) as url:
        remote = post(url, raw)
    assert len(remote) == len(local) == 10 - 6 + 1
    np.testing.assert_allclose(remote["prediction"], local["prediction"], atol=1e-6)
