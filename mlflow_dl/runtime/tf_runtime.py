"""Four settings for how TensorFlow and Keras run the lessons' small models (figures: bench/RESULTS.md).

All four apply, through own_fit() around each fit, only in a process mlflow-dl owns; a user's process gets only
the one trace of the train step (on the fitted model alone), and Grappler off only where it sets
MLFLOW_DL_GRAPPLER=off itself. README "Workarounds" and strict xfails in tests/test_tf_runtime.py track them:

- Keras' saving cache: keyed inconsistently (keras 3.11-3.15, saving_lib.get_attr_skipset), rebuilt every save.
- Grappler off in mlflow-dl's own processes (`MLFLOW_DL_GRAPPLER=on` keeps it): a cost with no gain here.
- One trace of the train step: optimizer and metric variables built first, so no second trace (tensorflow#48851).
- Each fit's train step freed with its model: `tf.custom_gradient` registrations are never removed (tensorflow#97697).
"""

from __future__ import annotations

import contextlib
import os
import sys

from mlflow_dl.runtime import process
from mlflow_dl.errors import ConfigError

GRAPPLER_ENV = "MLFLOW_DL_GRAPPLER"
_CHOICES = {"on": True, "1": True, "true": True, "off": False, "0": False, "false": False}
_SAVED_KINDS = ("Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss", "Operation")


def grappler_wanted() -> bool | None:
    """MLFLOW_DL_GRAPPLER as True (on), False (off) or None (unset or empty: TensorFlow's own default)."""
    value = os.environ.get(GRAPPLER_ENV, "")
    if not value.strip():
        return None
    try:
        return _CHOICES[value.strip().lower()]
    except KeyError:
        raise ConfigError(f"{GRAPPLER_ENV}={value!r} is invalid; expected on or off") from None


def own_process() -> None:
    """For a process mlflow-dl owns (the CLI): Grappler off unless the user said otherwise;
    spawned workers and `mlflow run` children inherit the choice through the environment."""
    if grappler_wanted() is None:  # a bad value: a one-line error here, before anything starts
        os.environ[GRAPPLER_ENV] = "off"


def apply_grappler_choice() -> None:
    """Before a process's first TensorFlow op (after it, TensorFlow keeps what it started with)."""
    if grappler_wanted() is False:
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


def grappler_state() -> str:
    """What this process's fits run with, for the run's params: on, or off."""
    import tensorflow as tf

    return "off" if tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer") else "on"


def cache_saving_skipsets() -> None:
    """Fill Keras' saving cache under the key it reads. keras.backend.clear_session empties it,
    so every fit calls this (costly once, then a dictionary lookup per kind)."""
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib
    except ImportError:  # another Keras layout: its saving as it is
        return
    for kind in _SAVED_KINDS:
        key = f"saving_attr_skiplist_{kind}"
        if global_state.get_global_attribute(key) is None:
            try:
                global_state.set_global_attribute(key, saving_lib.get_attr_skipset(kind))
            except (AttributeError, ValueError):  # a Keras without that kind, or without the function
                return


def trace_train_step_once(model) -> None:
    """Build the model's optimizer and metrics from the first batch's spec, just before the first
    train step, so TensorFlow traces it once. Keras' own symbolic build (Trainer._symbolic_build, the
    one it runs under a distribution strategy); where it cannot build a model symbolically (some
    subclassed models), Keras builds it inside the trace as it would have. Call in on_train_begin."""
    import keras

    step = getattr(model, "train_function", None)
    if keras.backend.backend() != "tensorflow" or step is None or not hasattr(model, "_symbolic_build"):
        return

    def first_step(iterator):
        model.train_function = step
        spec = getattr(iterator, "element_spec", None)  # a tf.data iterator's batch, without taking one
        if spec is not None:
            try:
                model._symbolic_build(data_batch=spec)
            except Exception:  # noqa: BLE001 - Keras' own path follows, and raises what is really wrong
                pass
        return step(iterator)

    model.train_function = first_step


_CUSTOM_GRADIENT = "CustomGradient-"  # the prefix tf.custom_gradient names its registrations with


def _gradient_registry() -> dict:
    """TensorFlow's registry of gradient functions by op type; empty when TensorFlow is not loaded
    or keeps it elsewhere."""
    ops = sys.modules.get("tensorflow.python.framework.ops")
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else {}


def custom_gradients() -> frozenset[str]:
    """The custom gradients registered so far: call before a fit, pass to forget_custom_gradients after it."""
    return frozenset(name for name in _gradient_registry() if name.startswith(_CUSTOM_GRADIENT))


def _closure(fn) -> list:
    values = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # a cell not filled yet
            pass
    return values


def _sums_gradients(entry: dict) -> bool:
    """Whether a registered custom gradient is the one TensorFlow's cross-replica sum registers
    (ReplicaContext.all_reduce, through which Keras' optimizer sums the gradients)."""
    return any("all_reduce" in getattr(inner, "__qualname__", "")
               for outer in _closure(entry.get("type")) for inner in _closure(outer))


def forget_custom_gradients(known: frozenset[str]) -> None:
    """Drop the gradient sums' custom gradients registered since `known` was taken, and with them the
    graphs they hold. Any other stays: a model's own tf.custom_gradient may be differentiated again."""
    registry = _gradient_registry()
    for name in [n for n, entry in registry.items()
                 if n.startswith(_CUSTOM_GRADIENT) and n not in known and _sums_gradients(entry)]:
        del registry[name]


@contextlib.contextmanager
def own_fit():
    """Around a fit in a process mlflow-dl owns: Keras' saving cache filled, and the gradient sums the
    fit registers dropped after it. In a user's process: nothing (Keras and TensorFlow as they are)."""
    if not process.owned():
        yield
        return
    cache_saving_skipsets()
    known = custom_gradients()
    try:
        yield
    finally:
        forget_custom_gradients(known)
