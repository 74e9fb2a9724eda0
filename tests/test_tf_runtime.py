"""tf_runtime: Keras' saving cache filled where Keras reads it; Grappler off in mlflow-dl's own processes;
one trace of the train step; the train step's graph freed with its model."""

import gc
import subprocess

import keras
import numpy as np
import pytest

from conftest import all_runs, mlflow_dl_cli
from mlflow_dl import MlflowCallback, tf_runtime


def small_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    model.fit(np.ones((8, 4)), np.ones(8), epochs=1, verbose=0)  # optimizer and metric state to save too
    return model


def layers_built_by_saving(model, path) -> int:
    """How many throwaway Layer objects one save_weights builds (Keras' skipset look-ups that miss)."""
    built = 0
    init = keras.layers.Layer.__init__

    def counting(self, *args, **kwargs):
        nonlocal built
        built += 1
        init(self, *args, **kwargs)

    keras.layers.Layer.__init__ = counting
    try:
        model.save_weights(path)
    finally:
        keras.layers.Layer.__init__ = init
    return built


def test_saving_cache_is_filled_where_keras_reads_it_and_saves_the_same_weights(tmp_path):
    model = small_model()
    keras.backend.clear_session(free_memory=False)  # what every sweep does between trials: the cache is empty
    # Keras' own cache misses (if this fails, Keras fixed its look-up and tf_runtime can drop the workaround)
    assert layers_built_by_saving(model, tmp_path / "before.weights.h5") > 0
    tf_runtime.cache_saving_skipsets()
    assert layers_built_by_saving(model, tmp_path / "after.weights.h5") == 0
    for name in ("before", "after"):
        restored = small_model()
        restored.load_weights(tmp_path / f"{name}.weights.h5")
        for got, want in zip(restored.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(got, want)
        for got, want in zip(restored.optimizer.variables, model.optimizer.variables):
            np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("setting, expected", [(None, "off"), ("on", "on")])
def test_the_cli_trains_without_grappler_unless_asked(setting, expected, tmp_path, monkeypatch, tracking_store):
    if setting is None:
        monkeypatch.delenv(tf_runtime.GRAPPLER_ENV, raising=False)
    else:
        monkeypatch.setenv(tf_runtime.GRAPPLER_ENV, setting)
    proc = subprocess.run([*mlflow_dl_cli(), "train", "--epochs", "2", "--hidden", "8"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = all_runs()
    assert run.info.status == "FINISHED"
    assert run.data.params["tensorflow_grappler"] == expected


def test_a_bad_grappler_setting_is_a_one_line_error_before_anything_starts(monkeypatch, capsys, tracking_store):
    from mlflow_dl.cli import main

    monkeypatch.setenv(tf_runtime.GRAPPLER_ENV, "maybe")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err == "error: MLFLOW_DL_GRAPPLER='maybe' is invalid; expected on or off\n"
    assert all_runs() == []


class CountingTraces(keras.Sequential):
    """A Sequential whose train_step counts how often TensorFlow traces it (the Python runs only then)."""

    traces = 0

    def train_step(self, data):
        CountingTraces.traces += 1
        return super().train_step(data)


class Unbuildable(keras.Model):
    """A subclassed model Keras cannot build symbolically (its call fails in Keras' symbolic scope): fit
    builds it inside the first trace, as it always has."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3, activation="softmax")

    def call(self, x):
        from keras.src.backend.common.symbolic_scope import in_symbolic_scope

        if in_symbolic_scope():
            raise RuntimeError("this model has no symbolic build")
        return self.dense(x)


def fit_counting(callbacks, model=None):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((64, 4)).astype("float32")
    y = (x[:, 0] * 3).astype(int).clip(0, 2)
    model = model or CountingTraces([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                                     keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    CountingTraces.traces = 0
    history = model.fit(x, y, validation_split=0.25, epochs=2, batch_size=16, verbose=0, callbacks=callbacks)
    keras.backend.clear_session(free_memory=False)
    return CountingTraces.traces, history.history


def test_a_tracked_fit_traces_the_train_step_once_and_learns_the_same(tracking_store):
    plain_traces, plain = fit_counting([])
    tracked_traces, tracked = fit_counting([MlflowCallback(log_model=False)])
    # Keras' own: variables made in the first trace, so TensorFlow traces again (if this fails, Keras builds
    # them first itself and tf_runtime can drop the workaround)
    assert plain_traces == 2
    assert tracked_traces == 1
    assert tracked.keys() == plain.keys()
    for name, values in plain.items():
        np.testing.assert_allclose(tracked[name], values, rtol=1e-6, err_msg=name)
    (run,) = all_runs()
    assert run.info.status == "FINISHED"


def test_a_model_keras_cannot_build_symbolically_still_trains(tracking_store):
    _, history = fit_counting([MlflowCallback(log_model=False)], model=Unbuildable())
    assert len(history["val_loss"]) == 2 and np.isfinite(history["val_loss"]).all()
    (run,) = all_runs()
    assert run.info.status == "FINISHED"


def live_graphs() -> int:
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    return sum(isinstance(o, FuncGraph) for o in gc.get_objects())


def test_fits_in_a_loop_free_each_train_step_graph_with_its_model(tracking_store):
    before = live_graphs()
    for _ in range(3):
        fit_counting([])
    # TensorFlow's own: its gradient registry keeps each fit's traced step, model gone or not (if this
    # fails, TensorFlow fixed tensorflow#97697 and tf_runtime can drop forget_custom_gradients)
    assert live_graphs() - before >= 3
    before = live_graphs()
    for _ in range(3):
        fit_counting([MlflowCallback(log_model=False)])
    assert live_graphs() == before
    assert [r.info.status for r in all_runs()] == ["FINISHED"] * 3


def test_a_process_that_exits_after_its_command_keeps_its_heap_frozen(monkeypatch):
    """The `mlflow-dl` program freezes for good: letting go before exiting would only hand Python's next
    full collection everything TensorFlow loaded. What the block left is still collected, so the next
    block cannot freeze it. Any other process gets its heap back after a block."""
    import gc
    import weakref

    from mlflow_dl import heap

    class Node:
        pass

    monkeypatch.setattr(heap, "_frozen", False)
    with heap.frozen():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    monkeypatch.setattr(heap, "_for_good", False)
    heap.for_good()
    try:
        with heap.frozen():
            garbage = Node()
            garbage.me = garbage  # a cycle: only the collector frees it
            left = weakref.ref(garbage)
            del garbage
        assert gc.get_freeze_count() > 0
        assert left() is None
    finally:
        gc.unfreeze()


def test_a_process_collects_rarely_while_it_imports_and_at_pythons_pace_once_its_work_holds_the_heap(monkeypatch):
    import gc

    from mlflow_dl import heap

    default = gc.get_threshold()
    monkeypatch.setattr(heap, "_frozen", False)
    monkeypatch.setattr(heap, "_thresholds", None)
    try:
        heap.importing()
        assert gc.get_threshold()[0] > 10 * default[0]
        with heap.frozen():
            assert gc.get_threshold() == default
            heap.importing()  # a worker initialised again: what it loads next is not worth the change
            assert gc.get_threshold() == default
    finally:
        gc.set_threshold(*default)
        gc.unfreeze()
