"""autolog() and the hand-passed MlflowCallback on a user's own Keras code."""

import signal

import keras
import mlflow
import numpy as np
import pytest

import mlflow_dl
from conftest import all_runs


class WeightRecorder(keras.callbacks.Callback):
    """Remembers every epoch's weights and val_loss, to check which epoch was kept."""

    def on_train_begin(self, logs=None):
        self.weights, self.val_loss = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())
        self.val_loss.append(logs["val_loss"])


def user_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.3), loss="mse")
    return model


def user_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    return x, (x @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(scale=0.5, size=64)).astype("float32")


@pytest.fixture
def autologged():
    mlflow_dl.autolog()
    yield
    mlflow_dl.autolog(disable=True)


def test_autolog_tracks_a_plain_fit_and_logs_the_best_epoch(autologged):
    import gc

    x, y = user_data()
    model, recorder = user_model(), WeightRecorder()
    frozen = []  # a user's process: nothing frozen out of the collector's reach, during fit or after it
    freeze_count = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: frozen.append(gc.get_freeze_count()))
    model.fit(x, y, validation_split=0.25, epochs=6, verbose=0, callbacks=[recorder, freeze_count])
    assert frozen == [0] * 6 and gc.get_freeze_count() == 0
    (run,) = all_runs()
    assert run.info.status == "FINISHED" and run.data.tags["mlflow_dl.family"] == "autolog"
    best = int(np.argmin(recorder.val_loss))
    assert run.data.metrics["best_epoch"] == best
    assert run.data.metrics["best_val_loss"] == pytest.approx(min(recorder.val_loss))
    assert run.data.params["optimizer"] == "SGD" and run.data.params["epochs"] == "6"
    # the checkpoint and the logged model hold the best epoch's weights; the model in memory the last epoch's
    for got, want in zip(model.get_weights(), recorder.weights[-1]):
        np.testing.assert_array_equal(got, want)
    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints/best.keras")
    checkpoint = keras.saving.load_model(path, safe_mode=True)
    for got, want in zip(checkpoint.get_weights(), recorder.weights[best]):
        np.testing.assert_allclose(got, want)
    served = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    import pandas as pd

    frame = pd.DataFrame(x[:5], columns=[f"f{i}" for i in range(4)])
    np.testing.assert_allclose(served.predict(frame)["output_0"], checkpoint.predict_on_batch(x[:5])[:, 0], rtol=1e-5)


class SubclassedModel(keras.Model):
    def __init__(self, **kwargs):  # Keras passes its own config (name, trainable, dtype) when it loads one
        super().__init__(**kwargs)
        self.hidden, self.out = keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.hidden(x))


def test_autolog_tracks_models_built_at_their_first_batch(autologged):
    """A Sequential without an Input and a subclassed model are built by fit: the run still gets
    their size, curves, checkpoint and a servable model: rows of columns, as what they were built on."""
    import pandas as pd

    x, y = user_data()
    models = (keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]), SubclassedModel())
    for model in models:
        model.compile(optimizer="adam", loss="mse")
        model.fit(x, y, validation_split=0.25, epochs=2, verbose=0)
    sequential, subclassed = sorted(all_runs(), key=lambda r: r.info.start_time)
    for run in (sequential, subclassed):
        assert run.info.status == "FINISHED"
        assert run.data.params["model.total_params"] == "49"
        assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_loss")) == 2
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints/best.keras")
    for run, model in zip((sequential, subclassed), models):
        assert "mlflow_dl.model_skipped" not in run.data.tags
        served = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        got = served.predict(pd.DataFrame(x[:3], columns=[f"f{i}" for i in range(4)]))["output_0"]
        np.testing.assert_allclose(got, model.predict_on_batch(x[:3])[:, 0], rtol=1e-5)


def test_autolog_uses_the_active_run_and_leaves_it_open(autologged):
    x, y = user_data()
    with mlflow.start_run() as run:
        user_model().fit(x, y, validation_split=0.25, epochs=2, verbose=0)
        assert mlflow.active_run().info.run_id == run.info.run_id
    assert len(all_runs()) == 1
    assert "best_val_loss" in mlflow.get_run(run.info.run_id).data.metrics


def test_callback_by_hand_without_autolog_and_failed_fit_is_not_left_running():
    x, y = user_data()
    user_model().fit(x, y, validation_split=0.25, epochs=2, verbose=0, callbacks=[mlflow_dl.MlflowCallback()])
    (run,) = all_runs()
    assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")) == 2
    mlflow_dl.autolog()
    try:
        with pytest.raises(Exception):
            user_model().fit(x[:, :3], y, epochs=1, verbose=0)  # wrong input shape fails inside fit
    finally:
        mlflow_dl.autolog(disable=True)
    assert [r.info.status for r in all_runs() if r.info.status == "RUNNING"] == []


def test_a_fit_that_raises_gives_ctrl_c_back_and_ends_its_run_failed(autologged):
    """Keras skips on_train_end when fit raises: Ctrl-C must not stay routed to the finished callback,
    and nothing is left frozen out of the garbage collector's reach."""
    import gc

    class Boom(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("boom")

    before = signal.getsignal(signal.SIGINT)
    x, y = user_data()
    with pytest.raises(RuntimeError, match="boom"):
        user_model().fit(x, y, validation_split=0.25, epochs=2, verbose=0, callbacks=[Boom()])
    assert signal.getsignal(signal.SIGINT) is before
    assert gc.get_freeze_count() == 0
    (run,) = all_runs()
    assert run.info.status == "FAILED"


class CtrlCAt(keras.callbacks.Callback):
    """The user's Ctrl-C in the middle of an epoch (after its first batch), while a library is at work
    that reports anything raised inside it as its own error (as a checkpoint write through h5py can)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == 0:
            try:
                signal.raise_signal(signal.SIGINT)
            except BaseException as exc:
                raise OSError("checkpoint write failed") from exc


@pytest.fixture
def python_ctrl_c():
    """Ctrl-C handled as in a terminal, whatever this test process inherited (a CI runner may ignore it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_mid_epoch_stops_fit_and_ends_the_run_killed_with_the_whole_epochs(python_ctrl_c, tmp_path):
    """The callback only notes the signal; fit stops after the batch, and the end of that epoch (not
    the signal handler, which may run inside a checkpoint write) ends the run and raises
    KeyboardInterrupt, before a BackupAndRestore after it could save the cut epoch as whole."""
    import json

    x, y = user_data()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(KeyboardInterrupt):
        user_model().fit(x, y, validation_split=0.25, epochs=5, batch_size=8, verbose=0,
                         callbacks=[CtrlCAt(2), mlflow_dl.MlflowCallback(), backup])
    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text())["epoch"] == 2  # resume at 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    (run,) = all_runs()
    assert run.info.status == "KILLED" and run.data.tags["mlflow_dl.error"] == "KeyboardInterrupt: SIGINT"
    steps = sorted(m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_loss"))
    assert steps == [0, 1]  # the cut epoch 2 is not logged as if it were whole


def test_a_process_that_ignores_ctrl_c_keeps_ignoring_it_during_fit():
    """nohup or a background job: SIGINT is ignored, and the callback does not take it over."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        x, y = user_data()
        user_model().fit(x, y, validation_split=0.25, epochs=3, batch_size=8, verbose=0,
                         callbacks=[CtrlCAt(1), mlflow_dl.MlflowCallback()])
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    (run,) = all_runs()
    assert run.info.status == "FINISHED"
    assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_loss")) == 3
