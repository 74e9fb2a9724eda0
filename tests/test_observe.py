"""Autolog only observes (the user's model ends as Keras left it), and "best" ranks the data loss."""

from __future__ import annotations

import keras
import mlflow
import numpy as np
import pytest

import mlflow_dl
from conftest import all_runs
from mlflow_dl.config import DataSpec, FitSpec, ModelSpec
from mlflow_dl.families import sweep


class Weights(keras.callbacks.Callback):
    """Each epoch's weights, as fit ends it."""

    def on_train_begin(self, logs=None):
        self.by_epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.by_epoch.append(self.model.get_weights())


def noisy_data(rows=160):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(rows, 6)).astype("float32")
    y = ((x[:, 0] - x[:, 1] + rng.normal(size=rows)) > 0).astype("float32")
    return x, y


def seeded_fit(autologged: bool):
    """A Dense model with Dropout, a user's EarlyStopping that does not restore, validation_split."""
    x, y = noisy_data()
    keras.utils.set_random_seed(11)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dropout(0.3),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.Adam(0.03), "binary_crossentropy", metrics=["accuracy"])
    weights = Weights()
    if autologged:
        mlflow_dl.autolog()
    try:
        history = model.fit(x, y, batch_size=16, epochs=12, verbose=0, validation_split=0.25,
                            callbacks=[keras.callbacks.EarlyStopping(patience=4), weights])
    finally:
        if autologged:
            mlflow_dl.autolog(disable=True)
    return model, history.history, model.evaluate(x[120:], y[120:], verbose=0), weights.by_epoch


def test_a_seeded_fit_ends_the_same_with_and_without_autolog():
    plain, plain_history, plain_eval, _ = seeded_fit(False)
    tracked, tracked_history, tracked_eval, by_epoch = seeded_fit(True)
    for a, b in zip(plain.get_weights(), tracked.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-6)
    assert tracked_history.keys() == plain_history.keys()
    for key in plain_history:
        np.testing.assert_allclose(tracked_history[key], plain_history[key], atol=1e-6)
    np.testing.assert_allclose(tracked_eval, plain_eval, atol=1e-6)
    # the logged model and the checkpoint hold the best epoch's weights (here not the last epoch's)
    (run,) = all_runs()
    best = int(run.data.metrics["best_epoch"])
    assert best == int(np.argmin(plain_history["val_loss"])) and best != len(plain_history["val_loss"]) - 1
    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints/best.keras")
    for got, want in zip(keras.saving.load_model(path, safe_mode=True).get_weights(), by_epoch[best], strict=True):
        np.testing.assert_allclose(got, want)
    logged = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    import pandas as pd

    x, _ = noisy_data()
    frame = pd.DataFrame(x[120:], columns=[f"f{i}" for i in range(6)])
    best_model = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(logged.predict(frame)["output_0"]),
                               best_model.predict_on_batch(x[120:])[:, 0], rtol=1e-5)


def test_restore_best_weights_is_the_explicit_way_to_restore_the_users_model():
    x, y = noisy_data()
    keras.utils.set_random_seed(11)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy")
    weights = Weights()
    model.fit(x, y, epochs=8, verbose=0, validation_split=0.25,
              callbacks=[weights, mlflow_dl.MlflowCallback(restore_best_weights=True, log_model=False)])
    (run,) = all_runs()
    for got, want in zip(model.get_weights(), weights.by_epoch[int(run.data.metrics["best_epoch"])], strict=True):
        np.testing.assert_allclose(got, want)


def test_callbacks_passed_by_position_under_autolog():
    x, y = noisy_data(64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("sgd", "binary_crossentropy")
    seen = []
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))
    mlflow_dl.autolog()
    try:
        history = model.fit(x, y, 32, 3, 0, [callback], 0.2)
    finally:
        mlflow_dl.autolog(disable=True)
    assert seen == [0, 1, 2] and len(history.history["val_loss"]) == 3
    (run,) = all_runs()
    assert run.info.status == "FINISHED"
    assert run.data.params["batch_size"] == "32" and run.data.params["epochs"] == "3"
    assert run.data.metrics["stopped_epoch"] == 2 and "model_val_loss" in run.data.metrics


def test_model_val_loss_of_an_l1_model_is_its_binary_cross_entropy_without_the_penalty():
    x, y = noisy_data(200)
    x_val, y_val = x[150:], y[150:]
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((6,)),
                              keras.layers.Dense(16, activation="relu", kernel_regularizer=keras.regularizers.l1(0.02)),
                              keras.layers.Dense(1, activation="sigmoid",
                                                 kernel_regularizer=keras.regularizers.l1(0.02))])
    model.compile(keras.optimizers.Adam(0.02), "binary_crossentropy")
    mlflow_dl.autolog()
    try:
        history = model.fit(x[:150], y[:150], validation_data=(x_val, y_val), epochs=6, batch_size=32, verbose=0)
    finally:
        mlflow_dl.autolog(disable=True)
    (run,) = all_runs()
    metrics = run.data.metrics
    logged = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    import pandas as pd

    p = np.clip(np.asarray(logged.predict(pd.DataFrame(x_val, columns=[f"f{i}" for i in range(6)]))["output_0"],
                           dtype="float64"), 1e-7, 1 - 1e-7)
    cross_entropy = float(-np.mean(y_val * np.log(p) + (1 - y_val) * np.log(1 - p)))
    assert metrics["model_val_loss"] == pytest.approx(cross_entropy, abs=1e-4)
    assert metrics["model_val_penalty"] > 0.01
    best = int(metrics["best_epoch"])
    # val_loss stays Keras' (with the penalty); the data loss is logged per epoch beside it and ranks the epochs
    assert metrics["model_val_loss"] + metrics["model_val_penalty"] == pytest.approx(history.history["val_loss"][best])
    data_loss = {m.step: m.value for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_data_loss")}
    assert sorted(data_loss) == list(range(6)) and best == min(data_loss, key=data_loss.get)
    assert metrics["best_val_data_loss"] == pytest.approx(data_loss[best])


def test_an_activity_regulariser_is_said_on_the_run():
    x, y = noisy_data(64)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activity_regularizer=keras.regularizers.l2(0.1)),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile("sgd", "binary_crossentropy")
    model.fit(x, y, epochs=1, verbose=0, validation_split=0.25, callbacks=[mlflow_dl.MlflowCallback(log_model=False)])
    (run,) = all_runs()
    note = run.data.tags["mlflow_dl.model_val_loss_note"]
    assert "activity regularisers (dense" in note and "includes their penalty" in note


def test_the_regularization_family_ranks_its_trials_on_the_data_loss(tracking_store):
    """With lr 0.05, l1=1e-4 has the lowest Keras val_loss but l1=1e-3 the lowest data loss."""
    from mlflow_dl.data.datasets import load_dataset
    from mlflow_dl.data.split import split_and_scale

    result = sweep("regularization", progress=False, model=ModelSpec(hidden="8"),
                   fit=FitSpec(epochs=2, patience=None, lr=0.05), kind="l1", strengths="0.0001,0.001")
    splits = split_and_scale(load_dataset("breast_cancer"), DataSpec())
    client = mlflow.MlflowClient()
    data_loss, keras_val_loss = {}, {}
    for run_id in result.table["run_id"]:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints/best.keras")
        model = keras.saving.load_model(path, safe_mode=True)
        p = np.clip(model.predict_on_batch(splits.x_val)[:, 0].astype("float64"), 1e-7, 1 - 1e-7)
        y = splits.y_val
        data_loss[run_id] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        metrics = client.get_run(run_id).data.metrics
        assert metrics["model_val_loss"] == pytest.approx(data_loss[run_id], abs=1e-4)
        keras_val_loss[run_id] = metrics["model_val_loss"] + metrics["model_val_penalty"]
    assert min(keras_val_loss, key=keras_val_loss.get) != min(data_loss, key=data_loss.get)  # the penalty decides
    assert result.best_run_id == min(data_loss, key=data_loss.get)
    assert client.get_run(result.parent_run_id).data.tags["best_run_id"] == result.best_run_id


def test_a_family_trial_chooses_its_epoch_on_the_data_loss(tracking_store):
    """l1=0.3 at lr 0.1: Keras' val_loss falls every epoch (the penalty shrinks) while the data loss is lowest
    at epoch 0; the trial keeps, logs and ranks that epoch."""
    result = sweep("regularization", progress=False, model=ModelSpec(hidden="8"),
                   fit=FitSpec(epochs=5, patience=None, lr=0.1), kind="l1", strengths="0.3")
    client = mlflow.MlflowClient()
    run_id = result.table["run_id"].iloc[0]
    history = {key: [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
               for key in ("val_loss", "val_data_loss")}
    assert int(np.argmin(history["val_loss"])) != int(np.argmin(history["val_data_loss"]))  # the penalty decides
    metrics = client.get_run(run_id).data.metrics
    assert metrics["best_epoch"] == metrics["model_epoch"] == int(np.argmin(history["val_data_loss"]))
    assert metrics["model_val_loss"] == pytest.approx(min(history["val_data_loss"]), abs=1e-6)
