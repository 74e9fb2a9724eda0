"""The Python API (`train`, `families.sweep`, `sweep_model`) leaves the caller's process as it found it:
random streams, TensorFlow's seed, Keras' session (dtype policy, layer names, seed), matplotlib's backend,
TensorFlow's threads, sys.path, logging levels and warnings filters. What only a fresh interpreter shows
(the backend switched on import, threads set before TensorFlow's first op) is checked in one."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, all_runs

import mlflow_dl
from mlflow_dl import families
from mlflow_dl.config import FitSpec, ModelSpec, TrialSpec

TINY = {"model": ModelSpec(hidden="4"), "fit": FitSpec(epochs=1, patience=None)}

USER_MODELS = '''
import keras


def build(units=2):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(units), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model
'''

# A user's script: its own settings first, then the three calls, the state read before and after each.
# The first call runs a sweep on two workers before TensorFlow's first op, where its threads can be set.
SCRIPT = '''
import hashlib, json, logging, pickle, random, sys, warnings

import matplotlib
matplotlib.use("svg")  # the user's backend, not Agg
import numpy as np
import keras
import tensorflow as tf
import mlflow  # what importing MLflow itself does is MLflow's, not the API's
import mlflow_dl
from keras.src.backend.common import global_state
from keras.src.utils import rng_utils
from tensorflow.python.eager import context
from mlflow_dl import families
from mlflow_dl.config import FitSpec, ModelSpec, TrialSpec

LOGGERS = ("alembic", "mlflow", "mlflow.store.db.utils", "mlflow.pyfunc", "tensorflow", "absl", "py.warnings")


def digest(value):
    return hashlib.sha256(pickle.dumps(value)).hexdigest()[:16]


def state():
    rng = getattr(context.context(), "_rng", None)
    return {
        "random": digest(random.getstate()),
        "numpy.random": digest(np.random.get_state()),
        "tensorflow seed": [context.global_seed(), digest(rng.getstate()) if rng else None],
        "keras seed": rng_utils.get_random_seed(),
        "keras dtype policy": keras.config.dtype_policy().name,
        "keras layer names": dict(global_state.get_global_attribute("object_name_uids") or {}),
        "matplotlib backend": matplotlib.get_backend(),
        "sys.path": list(sys.path),
        "tensorflow threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                               tf.config.threading.get_inter_op_parallelism_threads()],
        "logging levels": {name: logging.getLogger(name).level for name in ("", *LOGGERS)},
        "logging handlers": {name: len(logging.getLogger(name).handlers) for name in ("", *LOGGERS)},
        "warnings filters": [repr(f) for f in warnings.filters],
    }


if __name__ == "__main__":
    keras.utils.set_random_seed(7)
    random.random(), np.random.random()  # the user has drawn from the streams already
    keras.config.set_dtype_policy("float64")
    keras.layers.Dense(1)  # the user's first layer is "dense"
    mlflow.MlflowClient().search_experiments()  # the store's first use (MLflow's own logging set-up) done
    for name in LOGGERS:  # the user's own levels, none of them MLflow's or mlflow-dl's choice
        logging.getLogger(name).setLevel(logging.DEBUG)
    tiny = dict(model=ModelSpec(hidden="4"), fit=FitSpec(epochs=1, patience=None))
    seen = {"before": state()}
    families.sweep("dropout", progress=False, rates="0,0.4", workers=2, **tiny)
    seen["families.sweep"] = state()
    mlflow_dl.train(TrialSpec(**tiny))
    seen["train"] = state()
    x = np.random.default_rng(0).normal(size=(40, 3))
    mlflow_dl.sweep_model("user_models:build", {"units": [2]}, (x, x.sum(axis=1)), epochs=1, progress=False)
    seen["sweep_model"] = state()
    print("STATE " + json.dumps(seen))
'''

ITEMS = ("random", "numpy.random", "tensorflow seed", "keras seed", "keras dtype policy", "keras layer names",
         "matplotlib backend", "sys.path", "tensorflow threads", "logging levels", "logging handlers", "warnings filters")


# one worker takes the whole module, so its module-scoped fixture runs once (each xdist worker has its own)
pytestmark = pytest.mark.xdist_group("test_process_state")


@pytest.fixture(scope="module")
def fresh_process(tmp_path_factory):
    """{"before": state, call: state after it} from a fresh interpreter whose working folder holds
    user_models.py (importable only through the working folder: the script lives elsewhere)."""
    root = tmp_path_factory.mktemp("user")
    work, scripts = root / "work", root / "scripts"
    work.mkdir()
    scripts.mkdir()
    (work / "user_models.py").write_text(USER_MODELS)
    (scripts / "user_script.py").write_text(textwrap.dedent(SCRIPT))
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("MLFLOW_", "PYTHONPATH"))}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}", PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, str(scripts / "user_script.py")], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("STATE ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("STATE "):])


@pytest.mark.parametrize("item", ITEMS)
def test_each_call_leaves_a_fresh_process_as_it_found_it(fresh_process, item):
    before = fresh_process["before"][item]
    changed = {call: seen[item] for call, seen in fresh_process.items() if call != "before" and seen[item] != before}
    assert not changed, f"{item} was {before!r}; after: {changed!r}"


def test_the_script_saw_what_the_user_set(fresh_process):
    """The checks above compare something: the user's settings were in place before the calls."""
    before = fresh_process["before"]
    assert before["matplotlib backend"] == "svg" and before["keras dtype policy"] == "float64"
    assert before["keras seed"] == 7 and before["tensorflow seed"][0] == 7
    assert before["keras layer names"] == {"dense": 1}
    assert before["tensorflow threads"] == [0, 0]  # TensorFlow's own choice, which a 2-worker sweep kept
    assert set(before["logging levels"].values()) == {logging.DEBUG, logging.WARNING}  # the user's; root's


def user_draws():
    """What the user's next lines draw from each global stream: Python's, NumPy's, TensorFlow's, Keras'."""
    return random.random(), float(np.random.random()), float(tf.random.uniform(())), float(keras.random.uniform(()))


def users_own_state():
    keras.utils.set_random_seed(7)
    user_draws()  # the user has drawn from each stream already


def test_the_users_next_draws_and_dtype_policy_are_as_without_the_api(tmp_path):
    users_own_state()
    expected = user_draws()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        users_own_state()
        families.sweep("dropout", progress=False, rates="0,0.4", **TINY)
        mlflow_dl.train(TrialSpec(**TINY))
        assert keras.config.dtype_policy().name == "float64"
        assert user_draws() == expected
    finally:
        keras.config.set_dtype_policy(previous)
    assert sorted(r.info.status for r in all_runs()) == ["FINISHED"] * 4


def test_a_seeded_trial_gives_the_same_numbers_whatever_the_callers_streams():
    """Each trial seeds itself: the caller's streams and Keras session do not change its numbers."""
    first = mlflow_dl.train(TrialSpec(**TINY))
    keras.utils.set_random_seed(123)
    user_draws()
    keras.layers.Dense(1)
    second = mlflow_dl.train(TrialSpec(**TINY))
    assert second.history == first.history and second.metrics["test_loss"] == first.metrics["test_loss"]


def test_where_keras_keeps_its_session_elsewhere_the_callers_dtype_policy_and_streams_still_come_back(monkeypatch):
    """Fallback of the private trackers (another Keras layout): Keras' session cleared after the trial and
    the caller's dtype policy set again; Python's, NumPy's and TensorFlow's streams restored as usual."""
    import keras.src.backend.common

    monkeypatch.delattr(keras.src.backend.common, "global_state")
    monkeypatch.setitem(sys.modules, "keras.src.backend.common.global_state", None)  # ImportError
    keras.utils.set_random_seed(7)
    expected = user_draws()[:3]
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        keras.utils.set_random_seed(7)
        mlflow_dl.train(TrialSpec(**TINY))
        assert keras.config.dtype_policy().name == "float64"
        assert user_draws()[:3] == expected
    finally:
        keras.config.set_dtype_policy(previous)
    assert [r.info.status for r in all_runs()] == ["FINISHED"]


def test_without_tensorflows_op_seed_stream_its_global_seed_alone_comes_back(monkeypatch):
    from tensorflow.python.eager import context

    tf.random.set_seed(5)
    first = float(tf.random.uniform(()))
    monkeypatch.delattr(context.context(), "_rng")  # a TensorFlow that keeps it elsewhere
    mlflow_dl.train(TrialSpec(**TINY))
    assert context.global_seed() == 5
    assert float(tf.random.uniform(())) == first  # the op seeds start again from the global seed
