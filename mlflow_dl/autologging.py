"""`mlflow_dl.autolog()`: track every `model.fit` of a user's own Keras code.

MLflow's convention: one call patches `keras.Model.fit` so that it appends a
MlflowCallback after the user's callbacks (unless one is already there), however
fit was called (callbacks by keyword or by position). The run is the active one,
or a new one that ends with the fit. It only observes: the model keeps the weights
fit left it, unless restore_best_weights=True is asked for.
"""

from __future__ import annotations

import functools
import inspect

import keras

from mlflow_dl.fit import fit_params
from mlflow_dl.delivery import runs
from mlflow_dl.fit.callback import MlflowCallback

_original_fit = None


def autolog(disable: bool = False, **callback_kwargs) -> None:
    """Turn tracking of every `model.fit` on (or off with disable=True).

    `callback_kwargs` go to MlflowCallback (monitor, restore_best_weights, log_weights, log_model).
    """
    global _original_fit
    if _original_fit is None:
        _original_fit = keras.Model.fit
    _keras_tuner_searches(disable, callback_kwargs)
    if disable:
        keras.Model.fit = _original_fit
        return
    original = _original_fit
    signature = inspect.signature(original)

    @functools.wraps(original)
    def fit(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:  # fit itself says what is wrong with the call
            return original(self, *args, **kwargs)
        callbacks = list(bound.arguments.get("callbacks") or [])
        if any(isinstance(c, MlflowCallback) for c in callbacks):
            return original(self, *args, **kwargs)
        tracker = MlflowCallback(**callback_kwargs)
        tracker.fit_arguments = fit_params.bind_fit(original, self, args, kwargs)  # what stock autolog logs, and more
        bound.arguments["callbacks"] = callbacks + [tracker]  # where the user put them: by keyword or by position
        try:
            return original(*bound.args, **bound.kwargs)
        except BaseException as exc:  # Keras skips on_train_end on errors: end our run ourselves
            if getattr(tracker, "owns_run", False) and tracker.run_id:
                runs.end_run(tracker.run_id, exc)
            raise
        finally:
            tracker.release()

    keras.Model.fit = fit


def _keras_tuner_searches(disable: bool, callback_kwargs: dict) -> None:
    """keras-tuner's `search()` as a parent run with a child per trial (sweeps/user_search), when installed."""
    import importlib.util

    if importlib.util.find_spec("keras_tuner") is None:
        return
    from mlflow_dl.sweeps import user_search

    if disable:
        user_search.unpatch()
    else:
        user_search.patch(callback_kwargs)
