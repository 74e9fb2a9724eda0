"""The champion served by a real `mlflow models serve` (started through `mlflow-dl serve`)."""

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from conftest import free_port, mlflow_dl_cli, wait_http
from mlflow_dl.config import DataSpec, FitSpec, ModelSpec, TrialSpec
from mlflow_dl.families.train import train
from mlflow_dl.registry.promotion import promote

NAME = "serve-bc"


# one worker takes the whole module, so its module-scoped fixture runs once (each xdist worker has its own)
pytestmark = pytest.mark.xdist_group("test_serving")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny breast-cancer champion and the scoring server `mlflow-dl serve` starts for it."""
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        train(TrialSpec(data=DataSpec("breast_cancer"), model=ModelSpec(hidden="8"),
                        fit=FitSpec(epochs=2, patience=None, lr=1e-2)), experiment="serving")
        promote("serving", NAME)
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    port = free_port()
    log = open(root / "serve.log", "w")
    proc = subprocess.Popen(mlflow_dl_cli() + ["serve", "--model-name", NAME, "--port", str(port)],
                            env={**os.environ, "MLFLOW_TRACKING_URI": uri}, cwd=root,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/ping", timeout=180, proc=proc)
        yield uri, url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # mlflow-dl and the server it started
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def post(url, body):
    req = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def split(frame):
    return {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}


ROWS = load_breast_cancer(as_frame=True).frame.drop(columns="target").sample(25, random_state=0)


def test_http_predictions_equal_in_process_predictions(served, monkeypatch):
    uri, url = served
    status, body = post(url, split(ROWS))
    assert status == 200, body
    served_frame = pd.DataFrame(body["predictions"])
    mlflow.set_tracking_uri(uri)
    local = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(ROWS)
    assert list(served_frame.columns) == ["probability", "class"]
    np.testing.assert_allclose(served_frame["probability"], local["probability"], atol=1e-6)
    assert list(served_frame["class"]) == list(local["class"])
    # raw rows in any column order give the same answer
    status, body = post(url, split(ROWS[ROWS.columns[::-1]]))
    np.testing.assert_allclose(pd.DataFrame(body["predictions"])["probability"], local["probability"], atol=1e-6)


def test_http_answers_arrays_of_rows_in_column_order(served):
    """A 2-D array (TF-serving `inputs` or `instances`, which a numpy user sends) is rows in the
    order of the training columns; `mlflow models serve` answers it like the DataFrame."""
    uri, url = served
    mlflow.set_tracking_uri(uri)
    local = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(ROWS)
    for body in ({"inputs": ROWS.to_numpy().tolist()}, {"instances": ROWS.to_numpy().tolist()}):
        status, answer = post(url, body)
        assert status == 200, answer
        np.testing.assert_allclose(pd.DataFrame(answer["predictions"])["probability"], local["probability"],
                                   atol=1e-6)
    status, answer = post(url, {"inputs": ROWS.to_numpy()[:, :29].tolist()})
    assert status == 400 and "shape (25, 29)" in answer["message"] and "(n, 30)" in answer["message"], answer


BAD = {
    "missing column": split(ROWS.drop(columns=["mean radius"])),
    "extra column": split(ROWS.assign(extra=1.0)),
    "string in a numeric column": split(ROWS.astype(object).assign(**{"mean radius": "abc"})),
    "null value": split(ROWS.assign(**{"mean radius": None})),
    "no rows": {"dataframe_split": {"columns": list(ROWS.columns), "data": []}},
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_requests_get_400_naming_the_expected_columns(served, case):
    _, url = served
    status, body = post(url, BAD[case])
    assert status == 400, body
    assert "expected" in body["message"] and "'worst fractal dimension'" in body["message"], body["message"][:500]
