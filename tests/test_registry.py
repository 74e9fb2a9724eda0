"""Promotion against a real SQLite store and real (tiny) Keras runs."""

import subprocess

import keras
import mlflow
import numpy as np
import pytest

from conftest import mlflow_dl_cli
from mlflow_dl.config import DataSpec, FitSpec, ModelSpec, TrialSpec
from mlflow_dl.errors import ConfigError, PromotionError
from mlflow_dl.families.train import train
from mlflow_dl.registry.candidates import find_best
from mlflow_dl.registry.promotion import promote
from mlflow_dl.fit import comparability


def fit(experiment, lr, epochs=2, dataset="breast_cancer", hidden="8"):
    spec = TrialSpec(data=DataSpec(dataset), model=ModelSpec(hidden=hidden),
                     fit=FitSpec(epochs=epochs, patience=None, lr=lr))
    return train(spec, experiment=experiment)


# one worker takes the whole module, so its module-scoped fixture runs once (each xdist worker has its own)
pytestmark = pytest.mark.xdist_group("test_registry")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """'weak': one poor run; 'sweep': three runs with different losses; 'diabetes': one run."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    runs = {"weak": [fit("weak", lr=1e-4, epochs=1)],
            "sweep": [fit("sweep", lr=lr) for lr in (1e-3, 3e-2, 1e-2)],
            "diabetes": [fit("diabetes", lr=1e-2, dataset="diabetes")]}
    mlflow.set_tracking_uri(None)
    return uri, runs


@pytest.fixture
def client(store, monkeypatch):
    uri, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def test_the_argmin_is_chosen_registered_and_aliased(store, client):
    _, runs = store
    losses = {r.run_id: r.metrics["model_val_loss"] for r in runs["sweep"]}
    assert len(set(losses.values())) == 3
    best = min(losses, key=losses.get)
    result = promote("sweep", "argmin-model")
    assert result.run_id == best and result.moved and result.version == "1"
    version = client.get_model_version_by_alias("argmin-model", "champion")
    assert version.run_id == best and str(version.version) == "1"
    assert version.tags["mlflow_dl.source_run"] == best
    assert version.tags["mlflow_dl.metric"] == "model_val_loss"
    assert version.tags["mlflow_dl.comparability_key"] == client.get_run(best).data.tags["mlflow_dl.comparability_key"]
    assert float(version.tags["mlflow_dl.value"]) == pytest.approx(losses[best])
    assert version.tags["mlflow_dl.previous_champion"] == "none"
    # only the winner is registered
    assert len(client.search_model_versions("name = 'argmin-model'")) == 1


def test_promote_twice_makes_one_version(client):
    first = promote("sweep", "twice-model")
    second = promote("sweep", "twice-model")
    assert first.moved and not second.moved
    assert second.version == first.version
    assert len(client.search_model_versions("name = 'twice-model'")) == 1


def test_alias_moves_only_on_improvement(store, client):
    _, runs = store
    weak = promote("weak", "moving-model")
    assert weak.run_id == runs["weak"][0].run_id and weak.moved
    margin = weak.value - min(r.metrics["model_val_loss"] for r in runs["sweep"])
    assert margin > 0
    kept = promote("sweep", "moving-model", min_improvement=margin + 1e-3)
    assert not kept.moved and kept.version is None
    assert str(client.get_model_version_by_alias("moving-model", "champion").version) == weak.version
    moved = promote("sweep", "moving-model", min_improvement=margin / 2)
    assert moved.moved and moved.previous_version == weak.version
    champion = client.get_model_version_by_alias("moving-model", "champion")
    assert str(champion.version) == moved.version != weak.version
    assert champion.tags["mlflow_dl.previous_champion"] == weak.version
    # the weaker run never takes the alias back
    back = promote("weak", "moving-model")
    assert not back.moved
    assert str(client.get_model_version_by_alias("moving-model", "champion").version) == moved.version


def test_other_data_and_signature_change_are_refused(client):
    promote("sweep", "bc-model")
    with pytest.raises(PromotionError, match="input signature .* differs.*--allow-signature-change"):
        promote("diabetes", "bc-model")
    with pytest.raises(PromotionError, match="comparability key .* not compared.*--allow-key-change"):
        promote("diabetes", "bc-model", allow_signature_change=True)


def test_sweep_scope_and_bad_input(store, client):
    _, runs = store
    parent = runs["sweep"][0].run_id
    with pytest.raises(PromotionError, match="no candidate in sweep"):
        find_best("sweep", parent_run_id=parent)  # no children: not a sweep parent
    with pytest.raises(ConfigError, match="experiment='nope'"):
        find_best("nope")
    with pytest.raises(ConfigError, match="min_improvement"):
        promote("sweep", "x", min_improvement=-1)


def test_a_lambda_layer_is_refused_at_promotion(client):
    import mlflow_dl

    inputs = keras.Input((3,))
    hidden = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    mlflow.set_experiment("lambda")
    with mlflow.start_run():  # a user's own run says what its val_loss measures (autolog does it from the data)
        mlflow.set_tags(comparability.tags("xs", "d1", "y", "raw", "mse"))
        model.fit(x, x[:, :1], validation_split=0.25, epochs=1, verbose=0, callbacks=[mlflow_dl.MlflowCallback()])
    with pytest.raises(PromotionError, match="safe_mode"):
        promote("lambda", "lambda-model")
    assert not client.search_registered_models("name = 'lambda-model'")


@pytest.mark.parametrize("args, needle", [
    (["--experiment", "does-not-exist"], "experiment='does-not-exist' not found"),
    (["--experiment", "Default"], "no candidate in experiment 'Default'"),
])
def test_promote_cli_bad_input_is_one_line_and_exit_2(tracking_store, args, needle):
    proc = subprocess.run(mlflow_dl_cli() + ["promote", "--model-name", "m", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


CUSTOM_LAYER = '''
import keras


@keras.saving.register_keras_serializable(package="my_layers")
class Twice(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x
'''


def test_the_safe_load_check_imports_a_models_classes_from_its_code_and_gives_sys_path_back(tmp_path, monkeypatch):
    """promote's safe-load check imports the model's custom classes from the code/ it ships, with that folder
    on sys.path for the import only: the caller's sys.path is as it was after the check."""
    import sys

    from mlflow_dl.fit.callback import MlflowCallback
    from mlflow_dl.registry.model_checks import check_safe_load

    src = tmp_path / "src"
    src.mkdir()
    (src / "my_layers.py").write_text(CUSTOM_LAYER)
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.delitem(sys.modules, "my_layers", raising=False)
    import my_layers

    x = np.random.default_rng(0).normal(size=(40, 3)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), my_layers.Twice(), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    callback = MlflowCallback()
    model.fit(x, x.sum(axis=1), validation_split=0.25, epochs=1, verbose=0, callbacks=[callback])
    sys.path.remove(str(src))  # from here on, the class imports only from the model's code/
    del sys.modules["my_layers"]
    before = list(sys.path)
    check_safe_load(callback.run_id)
    assert sys.path == before
    assert sys.modules["my_layers"].__file__ != str(src / "my_layers.py")  # the copy the model ships
