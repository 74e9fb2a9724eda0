"""tf_runtime: Keras' saving cache filled where Keras reads it; Grappler off in mlflow-dl's own processes;
one trace of the train step; the train step's graph freed with its model. Each workaround: its fallback when
the private API is gone, and an xfail(strict) test that passes (so fails) once upstream fixes the bug."""

import gc
import subprocess

import keras
import numpy as np
import pytest

from conftest import all_runs, mlflow_dl_cli
from mlflow_dl import MlflowCallback
from mlflow_dl.runtime import tf_runtime


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


@pytest.fixture
def owned(monkeypatch):
    """This test process as one mlflow-dl owns (the CLI's, a worker's)."""
    from mlflow_dl.runtime import process

    monkeypatch.setattr(process, "_owned", True)


@pytest.mark.xfail(strict=True, reason="Keras 3.11-3.15 caches get_attr_skipset under saving_attr_skipset_* and reads "
                   "saving_attr_skiplist_*: when this passes, drop tf_runtime.cache_saving_skipsets")
def test_upstream_keras_saving_cache_hits_on_its_own(tmp_path):
    model = small_model()
    keras.backend.clear_session(free_memory=False)
    model.save_weights(tmp_path / "first.weights.h5")  # Keras caches what it worked out...
    assert layers_built_by_saving(model, tmp_path / "second.weights.h5") == 0  # ...and would find it again


def test_saving_cache_is_filled_where_keras_reads_it_and_saves_the_same_weights(tmp_path):
    model = small_model()
    keras.backend.clear_session(free_memory=False)  # what every sweep does between trials: the cache is empty
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


@pytest.mark.xfail(strict=True, reason="Keras' TensorFlow trainer makes the optimizer's and metrics' variables inside "
                   "the first trace of the train step, so TensorFlow traces it again (tensorflow#48851): when this "
                   "passes, drop tf_runtime.trace_train_step_once")
def test_upstream_keras_traces_the_train_step_once_on_its_own():
    assert fit_counting([])[0] == 1


def test_a_tracked_fit_traces_the_train_step_once_and_learns_the_same(tracking_store):
    plain_traces, plain = fit_counting([])
    tracked_traces, tracked = fit_counting([MlflowCallback(log_model=False)])
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


@pytest.mark.xfail(strict=True, reason="TensorFlow's gradient registry keeps each fit's traced step, model gone or not "
                   "(tensorflow#97697): when this passes, drop tf_runtime.forget_custom_gradients")
def test_upstream_tensorflow_frees_each_train_step_graph_with_its_model():
    fit_counting([])
    before = live_graphs()
    for _ in range(3):
        fit_counting([])
    assert live_graphs() == before


def test_fits_in_mlflow_dls_own_process_free_each_train_step_graph_with_its_model(owned, tracking_store):
    with tf_runtime.own_fit():
        fit_counting([])
    before = live_graphs()
    for _ in range(3):
        with tf_runtime.own_fit():
            fit_counting([MlflowCallback(log_model=False)])
    assert live_graphs() == before
    assert [r.info.status for r in all_runs()] == ["FINISHED"] * 3


def test_a_users_process_keeps_keras_and_tensorflow_globals_as_they_are(tracking_store):
    """autolog and MlflowCallback: no entry dropped from TensorFlow's gradient registry, nothing put in Keras' cache."""
    from keras.src.backend.common import global_state

    keras.backend.clear_session(free_memory=False)
    registered = tf_runtime.custom_gradients()
    with tf_runtime.own_fit():  # the CLI's wrapper, in a process that is not the CLI's: nothing
        fit_counting([MlflowCallback()])  # log_model: best.keras and the model saved at the end
    assert tf_runtime.custom_gradients() > registered  # what this fit registered is still there
    assert global_state.get_global_attribute("saving_attr_skiplist_Layer") is None
    (run,) = all_runs()
    assert run.info.status == "FINISHED"


def test_without_kerass_saving_module_layout_fits_save_as_keras_does(owned, tmp_path, monkeypatch, tracking_store):
    import sys

    import keras.src.saving

    monkeypatch.delattr(keras.src.saving, "saving_lib")
    monkeypatch.setitem(sys.modules, "keras.src.saving.saving_lib", None)  # another Keras layout: ImportError
    with tf_runtime.own_fit():
        _, history = fit_counting([])
    monkeypatch.undo()
    model = small_model()
    model.save(tmp_path / "m.keras")
    assert keras.saving.load_model(tmp_path / "m.keras", safe_mode=True).count_params() == model.count_params()
    assert len(history["loss"]) == 2


def test_without_kerass_symbolic_build_a_tracked_fit_trains_as_keras_does(monkeypatch, tracking_store):
    from keras.src.trainers.trainer import Trainer

    _, plain = fit_counting([])
    monkeypatch.delattr(Trainer, "_symbolic_build")
    traces, tracked = fit_counting([MlflowCallback(log_model=False)])
    assert traces == 2  # Keras' own two traces, nothing worse
    for name, values in plain.items():
        np.testing.assert_allclose(tracked[name], values, rtol=1e-6, err_msg=name)


def test_without_tensorflows_gradient_registry_fits_run_and_nothing_is_dropped(owned, monkeypatch, tracking_store):
    import sys
    import types

    # a TensorFlow that keeps its registry elsewhere (its own code holds the real module still)
    monkeypatch.setitem(sys.modules, "tensorflow.python.framework.ops", types.ModuleType("ops"))
    assert tf_runtime.custom_gradients() == frozenset()
    with tf_runtime.own_fit():
        _, history = fit_counting([MlflowCallback(log_model=False)])
    assert np.isfinite(history["val_loss"]).all()
    assert [r.info.status for r in all_runs()] == ["FINISHED"]


def test_a_users_process_keeps_its_own_heap(monkeypatch):
    """Not mlflow-dl's process: its heap and collection thresholds are the host's, frozen or not."""
    from mlflow_dl.runtime import heap

    def collectable(obj) -> bool:  # gc.get_objects() lists every generation but the frozen one
        return any(o is obj for o in gc.get_objects())

    default = gc.get_threshold()
    gc.freeze()
    try:
        host_frozen = []  # frozen by the host: mlflow-dl's gc.unfreeze() would hand it back
        gc.freeze()
        made_since = []  # made after the host's freeze: mlflow-dl's gc.freeze() would take it
        # the freeze count is no witness: frozen objects freed by other threads lower it
        assert not collectable(host_frozen) and collectable(made_since)
        heap.collect_less_often()
        with heap.frozen():
            assert gc.get_threshold() == default
            assert not collectable(host_frozen) and collectable(made_since)
        assert gc.get_threshold() == default
        assert not collectable(host_frozen) and collectable(made_since)
    finally:
        gc.unfreeze()


def test_a_process_that_exits_after_its_command_keeps_its_heap_frozen(owned, monkeypatch):
    """The `mlflow-dl` program freezes for good: letting go before exiting would only hand Python's next
    full collection everything TensorFlow loaded. What the block left is still collected, so the next
    block cannot freeze it. Any other process gets its heap back after a block."""
    import gc
    import weakref

    from mlflow_dl.runtime import heap

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


def test_a_process_collects_rarely_while_it_imports_and_at_pythons_pace_once_its_work_holds_the_heap(owned, monkeypatch):
    import gc

    from mlflow_dl.runtime import heap

    default = gc.get_threshold()
    monkeypatch.setattr(heap, "_frozen", False)
    monkeypatch.setattr(heap, "_thresholds", None)
    try:
        heap.collect_less_often()
        assert gc.get_threshold()[0] > 10 * default[0]
        with heap.frozen():
            assert gc.get_threshold() == default
            heap.collect_less_often()  # a worker initialised again: what it loads next is not worth the change
            assert gc.get_threshold() == default
    finally:
        gc.set_threshold(*default)
        gc.unfreeze()
