"""Which epoch is best: the monitor's direction, validation_freq, resume, divergence (real Keras, real store)."""

from __future__ import annotations

import math
import os

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest

from mlflow_dl.errors import ConfigError
from mlflow_dl.fit.callback import MlflowCallback
from mlflow_dl.tags import NONFINITE_TAG


class Weights(keras.callbacks.Callback):
    """Each epoch's weights, as fit ends it (placed before MlflowCallback)."""

    def __init__(self, poison_at: int | None = None):
        super().__init__()
        self.by_epoch: dict[int, list] = {}
        self.poison_at = poison_at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.poison_at:  # this epoch diverges: NaN weights give a NaN loss
            self.model.set_weights([np.full_like(w, np.nan) for w in self.model.get_weights()])

    def on_epoch_end(self, epoch, logs=None):
        self.by_epoch[epoch] = self.model.get_weights()


def data(rows=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("float32")
    return x, y


def classifier(lr=0.05):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.SGD(lr), "binary_crossentropy", metrics=["accuracy"])
    return model


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def history(run_id, key):
    return {m.step: m.value for m in mlflow.MlflowClient().get_metric_history(run_id, key)}


def checkpoint_weights(run_id):
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints/best.keras")
    return keras.saving.load_model(path, safe_mode=True).get_weights()


def test_val_accuracy_keeps_its_highest_epoch_and_logs_its_weights_leaving_the_model_as_fit_left_it():
    x, y = data()
    model, weights = classifier(lr=0.3), Weights()
    tracker = MlflowCallback(monitor="val_accuracy", log_model=False)
    model.fit(x, y, validation_split=0.5, epochs=6, batch_size=8, verbose=0, callbacks=[weights, tracker])
    run = mlflow.MlflowClient().get_run(tracker.run_id)
    acc = history(tracker.run_id, "val_accuracy")
    assert min(acc.values()) < max(acc.values())  # the lowest and the highest epoch differ
    best = min(e for e, v in acc.items() if v == max(acc.values()))  # Keras: the first epoch at the maximum
    m = run.data.metrics
    assert m["best_epoch"] == best and m["best_val_accuracy"] == pytest.approx(max(acc.values()))
    assert m["best_val_loss"] == pytest.approx(min(history(tracker.run_id, "val_loss").values()))
    assert m["model_epoch"] == best
    assert m["model_val_loss"] == pytest.approx(history(tracker.run_id, "val_loss")[best])
    assert best != max(weights.by_epoch) and same(model.get_weights(), weights.by_epoch[max(weights.by_epoch)])
    assert same(checkpoint_weights(tracker.run_id), weights.by_epoch[best])


def test_explicit_mode_and_a_bad_mode():
    x, y = data()
    model, weights = classifier(lr=0.3), Weights()
    tracker = MlflowCallback(monitor="val_loss", mode="max", log_model=False)  # the worst loss, on purpose
    model.fit(x, y, validation_split=0.5, epochs=4, batch_size=8, verbose=0, callbacks=[weights, tracker])
    loss = history(tracker.run_id, "val_loss")
    assert mlflow.get_run(tracker.run_id).data.metrics["best_epoch"] == max(loss, key=loss.get)
    with pytest.raises(ConfigError, match="mode='best'.*auto, min, max"):
        MlflowCallback(mode="best")


def test_validation_freq_2_picks_only_validated_epochs():
    x, y = data()
    model, weights = classifier(), Weights()
    tracker = MlflowCallback(log_model=False)
    model.fit(x, y, validation_split=0.5, epochs=6, batch_size=8, verbose=0, validation_freq=2,
              callbacks=[weights, tracker])
    val = history(tracker.run_id, "val_loss")
    assert sorted(val) == [1, 3, 5]
    m = mlflow.get_run(tracker.run_id).data.metrics
    best = min(val, key=val.get)
    assert m["best_epoch"] == best and m["best_val_loss"] == pytest.approx(val[best])
    assert "best_loss" not in m  # no fallback to the training loss
    assert m["model_val_loss"] == pytest.approx(val[best])
    assert same(checkpoint_weights(tracker.run_id), weights.by_epoch[best])


def test_validation_freq_2_without_restore_says_which_epoch_model_val_loss_is():
    x, y = data()
    tracker = MlflowCallback(log_model=False, log_weights="last")
    classifier().fit(x, y, validation_split=0.5, epochs=5, batch_size=8, verbose=0, validation_freq=2,
                     callbacks=[tracker])
    run = mlflow.get_run(tracker.run_id)
    assert run.data.metrics["model_epoch"] == 4
    assert run.data.metrics["model_val_loss"] == pytest.approx(history(tracker.run_id, "val_loss")[3])
    assert run.data.tags["mlflow_dl.model_val_loss_epoch"].startswith("3 ")


def test_a_diverged_fit_keeps_its_best_finite_weights():
    x, y = data()
    model, weights = classifier(), Weights(poison_at=3)
    tracker = MlflowCallback(restore_best_weights=True)  # the model is given the best finite weights back too
    model.fit(x, y, validation_split=0.5, epochs=6, batch_size=8, verbose=0, callbacks=[weights, tracker])
    assert tracker.record.diverged_at == 3
    val = history(tracker.run_id, "val_loss")
    finite = {e: v for e, v in val.items() if math.isfinite(v) and e < 3}
    best = min(finite, key=finite.get)
    run = mlflow.get_run(tracker.run_id)
    assert run.info.status == "FAILED" and NONFINITE_TAG not in run.data.tags
    assert run.data.metrics["best_epoch"] == best and run.data.metrics["model_val_loss"] == pytest.approx(val[best])
    assert same(model.get_weights(), weights.by_epoch[best])
    assert same(checkpoint_weights(tracker.run_id), weights.by_epoch[best])
    served = mlflow.pyfunc.load_model(f"runs:/{tracker.run_id}/model")
    rows = pd.DataFrame(x[:3], columns=["f0", "f1", "f2", "f3"])
    assert np.isfinite(np.asarray(served.predict(rows), dtype=float)).all()


def test_a_diverged_fit_without_restore_is_tagged_and_has_no_model_val_loss():
    x, y = data()
    tracker = MlflowCallback(log_weights="last")
    classifier().fit(x, y, validation_split=0.5, epochs=6, batch_size=8, verbose=0,
                     callbacks=[Weights(poison_at=2), tracker])
    run = mlflow.get_run(tracker.run_id)
    assert "NaN" in run.data.tags[NONFINITE_TAG]
    assert "model_val_loss" not in run.data.metrics
    assert not run.outputs.model_outputs or all(
        mlflow.get_logged_model(o.model_id).status != "READY" for o in run.outputs.model_outputs)


class Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("killed")


def test_resume_keeps_the_best_over_all_epochs(tmp_path):
    """Epochs 0-2 learn; after the resume the labels are flipped, so every later epoch is worse:
    the best stays an early epoch, and its weights are what the resumed run ends with."""
    x, y = data(rows=96)
    xv, yv = data(rows=48, seed=1)
    backup = str(tmp_path / "backup")
    run = mlflow.start_run()
    try:
        weights = Weights()
        first = MlflowCallback(backup_dir=backup, log_model=False, restore_best_weights=True)  # as the CLI's
        model = classifier(lr=0.2)
        with pytest.raises(RuntimeError, match="killed"):
            model.fit(x, y, validation_data=(xv, yv), epochs=8, batch_size=8, verbose=0,
                      callbacks=[weights, first, keras.callbacks.BackupAndRestore(backup), Kill()])
        first.release()
        assert first.delivered()
        second = MlflowCallback(backup_dir=backup, log_model=False, restore_best_weights=True)
        resumed = classifier(lr=0.2)
        resumed.fit(x, 1 - y, validation_data=(xv, yv), epochs=8, batch_size=8, verbose=0,
                    callbacks=[weights, second, keras.callbacks.BackupAndRestore(backup)])
        assert second.record.first_epoch == 0 and min(weights.by_epoch) == 0
    finally:
        mlflow.end_run()
    val = history(run.info.run_id, "val_loss")
    assert sorted(val) == list(range(8))
    best = min(val, key=val.get)
    assert best <= 2  # the premise: the best epoch is one from before the kill
    m = mlflow.get_run(run.info.run_id).data.metrics
    assert m["best_epoch"] == best and m["best_val_loss"] == pytest.approx(val[best])
    assert m["model_val_loss"] == pytest.approx(val[best]) and m["stopped_epoch"] == 7
    assert same(resumed.get_weights(), weights.by_epoch[best])
    assert same(checkpoint_weights(run.info.run_id), weights.by_epoch[best])
    assert not os.path.exists(backup)


def test_auto_direction_reads_keras_metrics_and_falls_back_to_the_name():
    from mlflow_dl.fit.best import direction

    def my_recall(y, p):  # a plain function: Keras wraps it without a `_direction`
        return keras.ops.mean(p)

    def spread(y, p):
        return keras.ops.std(p)

    x, y = data(rows=16)
    model = classifier()
    model.compile("sgd", "binary_crossentropy", metrics=["mae", "accuracy", my_recall, spread])
    model.fit(x, y, epochs=1, verbose=0)
    assert direction(model, "val_mae") == "min" and direction(model, "accuracy") == "max"
    assert direction(model, "val_my_recall") == "max" and direction(model, "spread") == "min"
    assert direction(model, "val_loss") == "min" and direction(model, "val_accuracy", mode="min") == "min"


def test_autolog_follows_the_users_restoring_early_stopping():
    """A user's EarlyStopping(monitor="val_accuracy", min_delta, restore_best_weights=True) decides the
    best epoch: its monitor, its min_delta. The logged model, the checkpoint and the model fit hands back
    hold that epoch's weights, as Keras alone would have left them; the expected epoch is read off the
    run's logged val_accuracy curve, not off the EarlyStopping object."""
    import mlflow_dl

    x, y = data()
    model, weights = classifier(lr=0.05), Weights()
    stopping = keras.callbacks.EarlyStopping(monitor="val_accuracy", min_delta=0.07, patience=3,
                                             restore_best_weights=True)
    mlflow_dl.autolog(log_model=False)
    try:
        fitted = model.fit(x, y, validation_split=0.5, epochs=8, batch_size=8, verbose=0,
                           callbacks=[weights, stopping])
    finally:
        mlflow_dl.autolog(disable=True)
    run = mlflow.last_active_run()
    m = run.data.metrics
    acc = history(run.info.run_id, "val_accuracy")
    assert [acc[e] for e in sorted(acc)] == pytest.approx(fitted.history["val_accuracy"])  # the logged curve: Keras'
    # Keras' documented rule on the logged curve: an epoch improves on the best only by more than min_delta
    best, best_value = None, None
    for epoch in sorted(acc):
        if best_value is None or acc[epoch] - 0.07 > best_value:
            best, best_value = epoch, acc[epoch]
    highest = min(e for e, v in acc.items() if v == max(acc.values()))
    assert 0 < best < highest < max(acc), acc  # the premise: min_delta and restoring both change the answer
    assert m["best_epoch"] == m["model_epoch"] == best
    assert m["best_val_accuracy"] == pytest.approx(acc[best])
    assert m["model_val_loss"] == pytest.approx(history(run.info.run_id, "val_loss")[best])
    assert same(model.get_weights(), weights.by_epoch[best])
    assert same(checkpoint_weights(run.info.run_id), weights.by_epoch[best])
