"""Promotion compares like with like: one comparability key, finite weights, a servable model (real runs)."""

from __future__ import annotations

import os
import subprocess

import keras
import mlflow
import numpy as np
import pytest

from conftest import mlflow_dl_cli
from mlflow_dl.config import DataSpec, FitSpec, ModelSpec, TrialSpec
from mlflow_dl.data.datasets import load_dataset
from mlflow_dl.data.split import split_and_scale
from mlflow_dl.errors import PromotionError
from mlflow_dl.families.train import train
from mlflow_dl.registry.promotion import promote
from mlflow_dl.families import sweep
from mlflow_dl.fit.callback import MlflowCallback
from mlflow_dl.tags import KEY_TAG as KEY, NONFINITE_TAG


def fit(experiment, dataset="breast_cancer", scale_y=False, lr=1e-2, epochs=1):
    spec = TrialSpec(data=DataSpec(dataset, scale_y=scale_y), model=ModelSpec(hidden="8"),
                     fit=FitSpec(epochs=epochs, patience=None, lr=lr))
    return train(spec, experiment=experiment)


def key_of(run_id):
    return mlflow.get_run(run_id).data.tags[KEY]


def promote_cli(*args):
    proc = subprocess.run(mlflow_dl_cli() + ["promote", *args], capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc, errors


def test_two_data_sets_in_one_experiment_are_refused_without_a_filter(tracking_store):
    bc, diabetes = fit("mixed"), fit("mixed", dataset="diabetes")
    assert key_of(bc.run_id) != key_of(diabetes.run_id)
    proc, errors = promote_cli("--experiment", "mixed", "--model-name", "m")
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    line = errors[0]
    assert "2 comparability keys" in line and "--dataset" in line
    assert f"{key_of(bc.run_id)} (breast_cancer: 1 run)" in line
    assert f"{key_of(diabetes.run_id)} (diabetes: 1 run)" in line
    assert not mlflow.MlflowClient().search_registered_models()
    proc, _ = promote_cli("--experiment", "mixed", "--model-name", "m", "--dataset", "diabetes")
    assert proc.returncode == 0, proc.stderr
    assert mlflow.MlflowClient().get_model_version_by_alias("m", "champion").run_id == diabetes.run_id


def test_scaled_and_unscaled_targets_are_never_compared(tracking_store):
    plain, scaled = fit("scales", dataset="diabetes"), fit("scales", dataset="diabetes", scale_y=True)
    tags = mlflow.get_run(scaled.run_id).data.tags
    assert tags["mlflow_dl.comparability.scale_y"] == "True" and key_of(plain.run_id) != tags[KEY]
    # unscaled losses are in the target's squared units, thousands of times the scaled ones
    assert scaled.metrics["model_val_loss"] < plain.metrics["model_val_loss"]
    with pytest.raises(PromotionError, match="2 comparability keys .*diabetes: 1 run.*diabetes: 1 run"):
        promote("scales", "d")
    first = promote("scales", "d", key=key_of(plain.run_id))
    assert first.run_id == plain.run_id and first.moved
    with pytest.raises(PromotionError, match=f"has comparability key {key_of(plain.run_id)}.*--allow-key-change"):
        promote("scales", "d", key=key_of(scaled.run_id))
    assert mlflow.MlflowClient().get_model_version_by_alias("d", "champion").run_id == plain.run_id
    moved = promote("scales", "d", key=key_of(scaled.run_id), allow_key_change=True)
    assert moved.moved and moved.run_id == scaled.run_id


def own_fit(experiment, tags, callback, epochs, extra=()):
    """A user's own Keras fit on breast_cancer's split, in a run that carries `tags`."""
    ds = load_dataset("breast_cancer", None, "auto", False)
    s = split_and_scale(ds, DataSpec("breast_cancer"))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((s.x_train.shape[1],)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.set_tags(tags)
        model.fit(s.x_train, s.y_train, validation_data=(s.x_val, s.y_val), epochs=epochs, verbose=0,
                  callbacks=[*extra, callback])
    return mlflow.get_run(run.info.run_id)


def test_a_better_run_without_a_model_is_skipped(tracking_store):
    weak = fit("nomodel", lr=1e-4)
    same_key = {k: v for k, v in mlflow.get_run(weak.run_id).data.tags.items() if k.startswith("mlflow_dl.comparab")}
    better = own_fit("nomodel", same_key, MlflowCallback(log_model=False), epochs=10)
    assert better.data.metrics["model_val_loss"] < weak.metrics["model_val_loss"]
    proc, errors = promote_cli("--experiment", "nomodel", "--model-name", "nm")
    assert proc.returncode == 0, proc.stderr
    assert "1 better runs without a servable model skipped" in proc.stdout
    assert mlflow.MlflowClient().get_model_version_by_alias("nm", "champion").run_id == weak.run_id


class Poison(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 3:
            self.model.set_weights([np.full_like(w, np.nan) for w in self.model.get_weights()])


def test_a_run_with_nan_weights_is_never_promoted(tracking_store):
    ok = fit("nan", lr=1e-4)
    same_key = {k: v for k, v in mlflow.get_run(ok.run_id).data.tags.items() if k.startswith("mlflow_dl.comparab")}
    # a user's run the user ends FINISHED, whose fit diverged and kept its last (NaN) weights
    nan = own_fit("nan", same_key, MlflowCallback(log_weights="last"), epochs=6, extra=[Poison()])
    assert nan.info.status == "FINISHED" and "NaN" in nan.data.tags[NONFINITE_TAG]
    assert nan.data.metrics["best_val_loss"] < ok.metrics["model_val_loss"]  # what the old ranking took
    result = promote("nan", "n")
    assert result.run_id == ok.run_id


def test_early_stopping_restore_beats_last(tracking_store):
    result = sweep("early_stopping", data=DataSpec("breast_cancer"), model=ModelSpec(hidden="32"),
                   fit=FitSpec(epochs=40, lr=0.05), patience="1", min_delta="0", restore="on,off", progress=False)
    rows = result.table.set_index("trial")
    restore, last = rows.loc["p=1,d=0,restore"], rows.loc["p=1,d=0,last"]
    assert restore["best_val_loss"] == pytest.approx(last["best_val_loss"])  # the twins' old tie
    assert restore["model_val_loss"] < last["model_val_loss"]  # the last epoch came after the best
    assert result.best_run_id == restore["run_id"]
    assert promote("mlflow-dl", "es", parent_run_id=result.parent_run_id).run_id == restore["run_id"]


@pytest.mark.slow
def test_main_then_promote_without_filters_lists_the_keys(no_store):
    """The lesson, on the README's default store and without TensorFlow's start-up lines, trains four data
    sets in one experiment and promotes breast_cancer's best itself; a promote with no filter then names
    every key instead of ranking across them."""
    from test_quiet import NOISE

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # sqlite:///mlflow.db, here
    out = subprocess.run(mlflow_dl_cli() + ["main", "--epochs", "1"], capture_output=True, text=True, env=env,
                         timeout=3000)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not NOISE.search(out.stdout + out.stderr), (out.stdout + out.stderr)[-3000:]
    assert no_store == f"sqlite:///{os.path.join(os.getcwd(), 'mlflow.db')}"  # the store main made, asserted on below
    assert "promote: mlflow-dl-breast-cancer@champion -> version 1" in out.stdout
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias("mlflow-dl-breast-cancer", "champion")
    assert champion.tags[KEY] == key_of(champion.run_id)
    proc, errors = promote_cli("--experiment", "mlflow-dl", "--model-name", "any")
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert "comparability keys" in errors[0]
    for name in ("breast_cancer", "diabetes", "digits", "sunspots"):
        assert f"({name}: " in errors[0], errors[0]
    assert not client.search_registered_models("name = 'any'")


def _user_fit(x, y, experiment):
    """A user's own model.fit under autolog (the lecture's cell, small)."""
    import mlflow_dl

    mlflow.set_experiment(experiment)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    mlflow_dl.autolog()
    try:
        model.fit(x, y, validation_split=0.25, epochs=2, verbose=0)
    finally:
        mlflow_dl.autolog(disable=True)
    return mlflow.last_active_run().info.run_id


def test_autolog_runs_are_keyed_by_their_data_and_never_compared_across_it(tracking_store):
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(40, 3)).astype("float32"), rng.normal(size=(40, 3)).astype("float32")
    first, again = _user_fit(x1, x1.sum(axis=1), "own"), _user_fit(x1, x1.sum(axis=1), "own")
    other = _user_fit(x2, 100 * x2[:, 0], "own")  # other rows, another scale: its loss means something else
    assert key_of(first) == key_of(again) != key_of(other)
    proc, errors = promote_cli("--experiment", "own", "--model-name", "own")
    assert proc.returncode == 2 and len(errors) == 1 and "2 comparability keys" in errors[0], proc.stderr
    proc, _ = promote_cli("--experiment", "own", "--model-name", "own", "--key", key_of(first))
    assert proc.returncode == 0, proc.stderr
    champion = mlflow.MlflowClient().get_model_version_by_alias("own", "champion").run_id
    assert champion in (first, again)


def test_a_tf_data_pipelines_key_is_marked_unhashed_and_promote_says_so(tracking_store):
    """A pipeline is keyed by its element spec and size, not its contents: other data of the same
    shapes shares the key, and promote's line says so."""
    import tensorflow as tf

    import mlflow_dl

    mlflow.set_experiment("piped")
    rng = np.random.default_rng(0)
    runs = []
    for scale in (1.0, 100.0):  # two data sets of the same shapes: one key, as nothing reads them
        x = rng.normal(size=(40, 3)).astype("float32")
        train_data = tf.data.Dataset.from_tensor_slices((x[:32], scale * x[:32].sum(axis=1))).batch(8)
        val_data = tf.data.Dataset.from_tensor_slices((x[32:], scale * x[32:].sum(axis=1))).batch(8)
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        mlflow_dl.autolog()
        try:
            model.fit(train_data, validation_data=val_data, epochs=1, verbose=0)
        finally:
            mlflow_dl.autolog(disable=True)
        runs.append(mlflow.last_active_run().info.run_id)
    tags = mlflow.get_run(runs[0]).data.tags
    assert tags["mlflow_dl.data_digest"].startswith("unhashed:")
    assert "unhashed:" in tags["mlflow_dl.comparability.digest"] and key_of(runs[0]) == key_of(runs[1])
    result = promote("piped", "piped")
    assert "not hashed" in result.message and "tf.data" in result.message and "\n" not in result.message
