"""Every model autolog sees gets a servable model: named tensors for several inputs, sequences,
images and a subclassed model, answered by a real `mlflow models serve`, and promotable."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request

import keras
import warnings

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

import mlflow_dl
from autolog_user_models import TwoPartRegressor, WindowRegressor
from conftest import free_port, wait_http
from mlflow_dl.cli import main


@pytest.fixture
def autologged():
    mlflow_dl.autolog()
    yield
    mlflow_dl.autolog(disable=True)


RNG = np.random.default_rng(0)


def two_inputs(keyed: bool):
    """The lecture's two-input Functional model: two branches joined with concatenate."""
    keras.utils.set_random_seed(0)
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    joined = keras.layers.concatenate([keras.layers.Dense(4, activation="relu")(a), b])
    model = keras.Model({"a": a, "b": b} if keyed else [a, b], keras.layers.Dense(1)(joined))
    model.compile(optimizer="adam", loss="mse")
    xa, xb = RNG.normal(size=(48, 3)).astype("float32"), RNG.normal(size=(48, 2)).astype("float32")
    y = xa.sum(axis=1) - xb[:, 0]
    return model, ({"a": xa, "b": xb} if keyed else [xa, xb]), y, {"a": xa[:4], "b": xb[:4]}


def sine_windows(timesteps=8, n=48):
    """Windows of a sine series (rows, timesteps, 1) and the value after each."""
    series = np.sin(np.arange(n + timesteps) / 3.0).astype("float32")
    windows = np.lib.stride_tricks.sliding_window_view(series[:-1], timesteps)[:n, :, None]
    return np.ascontiguousarray(windows), series[timesteps:timesteps + n]


def recurrent(cell, name=None):
    """The lecture's stacks: a recurrent layer with return_sequences=True under a second one."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 1), **({"name": name} if name else {})),
                              cell(6, return_sequences=True), cell(4), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    x, y = sine_windows()
    return model, x, y, x[:5]


def images():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1), name="image"), keras.layers.Conv2D(3, 3, activation="relu"),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = RNG.random((40, 8, 8, 1)).astype("float32")
    return model, x, (x.mean(axis=(1, 2, 3)) > 0.5).astype("int64"), x[:3]


def subclassed():
    keras.utils.set_random_seed(0)
    model = WindowRegressor()
    model.compile(optimizer="adam", loss="mse")
    x, y = sine_windows()
    return model, x, y, x[:4]


KINDS = {
    "two-inputs-list": lambda: two_inputs(keyed=False),
    "two-inputs-dict": lambda: two_inputs(keyed=True),
    "simple-rnn": lambda: recurrent(keras.layers.SimpleRNN, name="window"),
    "lstm": lambda: recurrent(keras.layers.LSTM),  # an unnamed keras.Input: its layer's name
    "conv2d": images,
    "subclassed": subclassed,
}


def fit_under_autolog(kind):
    """The user's fit under autolog, in a run named after the kind; returns the run id, the model
    and the request's arrays."""
    model, x, y, request = KINDS[kind]()
    with mlflow.start_run(run_name=kind) as run:
        model.fit(x, y, validation_split=0.25, epochs=2, batch_size=8, verbose=0)
    return run.info.run_id, model, request


def body(kind, request, names):
    """The request a user writes from the signature: TF-serving `inputs` (columns) or `instances` (rows)."""
    if names is None:  # a subclassed model's one unnamed input
        return {"inputs": request.tolist()}
    arrays = request if isinstance(request, dict) else {names[0]: request}
    if kind in ("two-inputs-dict", "lstm"):
        rows = len(next(iter(arrays.values())))
        return {"instances": [{k: v[i].tolist() for k, v in arrays.items()} for i in range(rows)]}
    return {"inputs": {k: v.tolist() for k, v in arrays.items()}}


def declared_inputs(uri):
    """The float32 tensors a model on named tensors declares (its metadata; the signature holds its outputs)."""
    info = mlflow.models.get_model_info(uri)
    assert info.signature.inputs is None and info.signature.outputs is not None
    return info.metadata["mlflow_dl"]["input_tensors"]


def post(url, payload):
    req = urllib.request.Request(f"{url}/invocations", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return np.asarray(json.loads(resp.read())["predictions"])


@contextlib.contextmanager
def scoring_servers(uris, tracking_uri, cwd):
    """`mlflow models serve --env-manager local` for each model at once, each on a free loopback port."""
    procs = {}
    try:
        for key, uri in uris.items():
            port = free_port()
            procs[key] = (f"http://127.0.0.1:{port}", subprocess.Popen(
                [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                 "-h", "127.0.0.1", "-p", str(port)], env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
                cwd=cwd, stdout=open(os.path.join(cwd, f"serve-{key}.log"), "w"), stderr=subprocess.STDOUT,
                start_new_session=True))
        for url, proc in procs.values():
            wait_http(f"{url}/ping", timeout=300, proc=proc)
        yield {key: url for key, (url, _) in procs.items()}
    finally:
        for _, proc in procs.values():
            os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in procs.values():
            proc.wait(30)


@pytest.mark.slow
def test_every_model_kind_is_served_and_answers_like_predict(autologged, tracking_store, tmp_path):
    fitted = {kind: fit_under_autolog(kind) for kind in KINDS}
    names = {}
    for kind, (run_id, _, _) in fitted.items():
        run = mlflow.get_run(run_id)
        assert "mlflow_dl.model_skipped" not in run.data.tags, (kind, run.data.tags)
        inputs = declared_inputs(f"runs:/{run_id}/model")
        assert {t["dtype"] for t in inputs} == {"float32"}, kind  # what a REST client sends
        names[kind] = [t["name"] for t in inputs] if inputs[0]["name"] is not None else None
    assert names["two-inputs-list"] == names["two-inputs-dict"] == ["a", "b"]
    assert names["simple-rnn"] == ["window"] and names["conv2d"] == ["image"]
    assert names["lstm"][0].startswith("input_layer") and names["subclassed"] is None
    uris = {kind: f"runs:/{run_id}/model" for kind, (run_id, _, _) in fitted.items()}
    with scoring_servers(uris, tracking_store, str(tmp_path)) as urls:
        for kind, (_, model, request) in fitted.items():
            got = post(urls[kind], body(kind, request, names[kind]))
            want = model.predict(request, verbose=0)
            assert got.shape == want.shape, kind
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=kind)


def test_tensor_input_runs_are_promoted_and_their_champions_predict(autologged, capsys):
    """A two-input model, and a subclassed one whose class Keras can only load from the code the model ships."""
    for kind, name in (("two-inputs-list", "two-inputs"), ("subclassed", "own-windows")):
        experiment = mlflow.set_experiment(name)
        run_id, model, request = fit_under_autolog(kind)
        with pytest.raises(SystemExit) as exit_info:
            main(["promote", "--experiment", experiment.name, "--model-name", name])
        out = capsys.readouterr()
        assert exit_info.value.code == 0, out
        assert f"{name}@champion -> version 1 (run {run_id}" in out.out
        champion = mlflow.pyfunc.load_model(f"models:/{name}@champion")
        np.testing.assert_allclose(champion.predict(request), model.predict(request, verbose=0), rtol=1e-5)
    assert [t["shape"] for t in declared_inputs("models:/two-inputs@champion")] == [[-1, 3], [-1, 2]]


def test_a_subclassed_model_called_with_a_dict_takes_one_named_tensor_per_key(autologged):
    keras.utils.set_random_seed(0)
    model = TwoPartRegressor()
    model.compile(optimizer="adam", loss="mse")
    x = {"prices": RNG.normal(size=(32, 3)).astype("float32"), "volumes": RNG.normal(size=(32, 2)).astype("float32")}
    with mlflow.start_run() as run:
        model.fit(x, x["prices"].sum(axis=1), validation_split=0.25, epochs=2, verbose=0)
    served = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert [t["name"] for t in declared_inputs(f"runs:/{run.info.run_id}/model")] == ["prices", "volumes"]
    request = {k: v[:4] for k, v in x.items()}
    np.testing.assert_allclose(served.predict(request), model.predict(request, verbose=0), rtol=1e-5)


def type_hint_warnings(records):
    return [str(w.message) for w in records if "type hint" in str(w.message).lower()]


def test_a_numpy_fit_model_answers_arrays_of_either_float_type_and_frames(autologged):
    """What `fit` took (a float64 2-D array) is what the logged model answers, in-process and through
    `mlflow.models.predict`; a DataFrame with the columns f0..fN too, and a wrong width is one line."""
    keras.utils.set_random_seed(0)
    x = RNG.normal(size=(64, 5))  # float64, as numpy makes it
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        with mlflow.start_run() as run:
            model.fit(x, x.sum(axis=1), validation_split=0.25, epochs=1, batch_size=16, verbose=0)  # best = last
        served = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        want = model.predict(x[48:], verbose=0)[:, 0]
        for request in (x[48:], x[48:].astype("float32"), pd.DataFrame(x[48:]),
                        pd.DataFrame(x[48:], columns=[f"f{i}" for i in range(5)])):
            np.testing.assert_allclose(served.predict(request)["output_0"], want, rtol=1e-5, atol=1e-5)
    assert type_hint_warnings(records) == []
    with pytest.raises(MlflowException) as bad:
        served.predict(x[:3, :4])
    assert "\n" not in str(bad.value) and "(3, 4)" in str(bad.value) and "(n, 5)" in str(bad.value)
    answered = mlflow.models.predict(f"runs:/{run.info.run_id}/model", x[48:], env_manager="local",
                                     output_path="answer.json")
    assert answered is None
    with open("answer.json") as f:
        got = [row["output_0"] for row in json.load(f)["predictions"]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["two-inputs-list", "lstm"])
def test_a_tensor_model_answers_float64_arrays_cast_to_its_float32_inputs(autologged, kind):
    run_id, model, request = fit_under_autolog(kind)
    served = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    want = model.predict(request, verbose=0)
    as64 = {k: v.astype("float64") for k, v in request.items()} if isinstance(request, dict) \
        else request.astype("float64")
    np.testing.assert_allclose(served.predict(as64), want, rtol=1e-5, atol=1e-6)
    names = [t["name"] for t in declared_inputs(f"runs:/{run_id}/model")]
    arrays = as64 if isinstance(as64, dict) else {names[0]: as64}
    for sent in (request, [arrays[n] for n in names] if len(names) > 1 else arrays[names[0]]):
        np.testing.assert_allclose(served.predict(sent), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(MlflowException, match=f"input '{names[0]}': values of type <U"):
        served.predict({**arrays, names[0]: np.full(arrays[names[0]].shape, "a")})


def test_no_type_hint_warning_from_the_logged_models(autologged):
    """MLflow warns about a PythonModel whose predict has no type hint; mlflow-dl's own models have one."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        run_id, model, request = fit_under_autolog("two-inputs-list")
        mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(request)
    assert type_hint_warnings(records) == []
