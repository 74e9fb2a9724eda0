"""A trial's seeds and Keras session, and the caller's own put back after it.

A trial is seeded with keras.utils.set_random_seed (Python's `random`, NumPy's global stream, TensorFlow's
global seed, Keras' seed generator) and builds its model in a Keras session of its own, so the same spec
gives the same numbers wherever it runs. In a process mlflow-dl owns (process.owned()) that is all, as it
always was: the next trial reseeds, and Keras' session is cleared after each trial. In a user's process
(the Python API) every global the seeding and the session touch is saved first and put back afterwards:
the caller's random streams, TensorFlow's global seed and its Keras session (dtype policy, layer-name
counters, seed generator) are as it left them.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading

import numpy as np

from mlflow_dl.runtime import process


def _tf_seed():
    """TensorFlow's global seed and the stream its op seeds are drawn from (eager mode), or None
    where TensorFlow is not loaded."""
    if "tensorflow" not in sys.modules:
        return None
    from tensorflow.python.eager import context

    ctx = context.context()
    rng = getattr(ctx, "_rng", None)
    return context.global_seed(), rng.getstate() if isinstance(rng, random.Random) else None


def _put_tf_seed(saved) -> None:
    import tensorflow as tf
    from tensorflow.python.eager import context

    seed, stream = saved if saved is not None else (None, None)
    tf.random.set_seed(seed)  # None: no global seed, as before TensorFlow's first set_seed
    rng = getattr(context.context(), "_rng", None)
    if stream is not None and isinstance(rng, random.Random):
        rng.setstate(stream)  # the op seeds carry on where the caller's left off


def _swap_keras_session(trackers=None):
    """Put `trackers` (or a fresh, empty pair: what clear_session leaves) in place of Keras' global state
    and settings; returns the ones replaced, or None where Keras keeps its state elsewhere."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:
        return None
    if not all(hasattr(global_state, n) for n in ("GLOBAL_STATE_TRACKER", "GLOBAL_SETTINGS_TRACKER")):
        return None
    old = global_state.GLOBAL_STATE_TRACKER, global_state.GLOBAL_SETTINGS_TRACKER
    global_state.GLOBAL_STATE_TRACKER, global_state.GLOBAL_SETTINGS_TRACKER = trackers or (
        threading.local(), threading.local())
    return old


@contextlib.contextmanager
def kept():
    """In a user's process: the block in a Keras session of its own, and afterwards Python's and NumPy's
    random streams, TensorFlow's global seed and the caller's Keras session as they were. Where Keras keeps
    its session elsewhere, its dtype policy alone is kept. In mlflow-dl's own processes: nothing."""
    if process.owned():
        yield
        return
    import keras

    streams = random.getstate(), np.random.get_state(), _tf_seed()
    session = _swap_keras_session()
    # reading the policy sets it (keras.config.dtype_policy): only where the session cannot be swapped
    policy = keras.config.dtype_policy() if session is None else None
    try:
        yield
    finally:
        if session is not None:
            _swap_keras_session(session)
        else:
            keras.backend.clear_session(free_memory=False)
            keras.config.set_dtype_policy(policy)
        random.setstate(streams[0])
        np.random.set_state(streams[1])
        if streams[2] is not None or "tensorflow" in sys.modules:
            _put_tf_seed(streams[2])


@contextlib.contextmanager
def seeded(seed: int):
    """The block (a trial: build, fit, test) seeded with `seed` in a Keras session of its own; in a user's
    process the caller's streams and session come back afterwards (kept)."""
    import keras

    if not process.owned():
        with kept():
            keras.utils.set_random_seed(seed)
            yield
        return
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        # Keras' global state reset, without its full gc.collect(): with TensorFlow and MLflow loaded that
        # scans millions of objects (as long as a short fit); Python's own collector frees the old model's cycles
        keras.backend.clear_session(free_memory=False)
