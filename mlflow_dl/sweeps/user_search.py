"""A user's own keras-tuner search under `mlflow_dl.autolog()`: a parent run, a nested child per trial.

For one `Tuner.search()` the tuner takes a subclass mixing in the bridge of `mlflow-dl tune`: its hooks open
and close each trial's child run, `_build_and_fit_model` (kept by keras-tuner for AutoKeras) appends
MlflowCallback. Should keras-tuner's layout change: without `_build_and_fit_model` autolog's own callback
still tracks the fit; without `Tuner.search` / `on_trial_begin` autolog leaves keras-tuner alone and says so.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import warnings

import keras_tuner as kt
import mlflow
import numpy as np

from mlflow_dl.sweeps import search_runs
from mlflow_dl.sweeps.tuner_bridge import Bridge, TrialRuns, settle
from mlflow_dl.delivery import experiments, runs
from mlflow_dl.fit.callback import MlflowCallback

FAMILY = search_runs.FAMILY

_patched: tuple | None = None  # (class that defines search, its own search)


class _UserBridge(Bridge):
    """A user's search: its own model and data; each execution's fit tracked, several a run each."""

    def __init__(self, parent_id: str, experiment_id: str, search_id: str, executions: int,
                 callback_kwargs: dict, resumed: bool):
        # echo nothing: keras-tuner prints its own progress
        super().__init__(parent_id, experiment_id, search_id, echo=lambda _line: None, resumed=resumed)
        self.executions, self.callback_kwargs = executions, callback_kwargs
        self._runs: list[MlflowCallback] = []  # this trial's executions

    def log_trial(self, trial_id: str, searched: dict) -> None:
        mlflow.log_params({**{f"hp.{k}": v for k, v in searched.items()}, "trial": trial_id,
                           "tuner.executions_per_trial": self.executions})
        self._runs = []

    def fit(self, build_and_fit, trial, *args, **kwargs):
        """One execution: keras-tuner builds and fits, MlflowCallback after its callbacks; with
        executions_per_trial > 1 each execution is a run nested under the trial's child."""
        callbacks = list(kwargs.get("callbacks") or [])
        given = [c for c in callbacks if isinstance(c, MlflowCallback)]  # the user's own (keras-tuner's copy)
        tracker = given[0] if given else MlflowCallback(**{"family": FAMILY, **self.callback_kwargs})
        kwargs["callbacks"] = callbacks if given else [*callbacks, tracker]
        self.tracker = tracker
        execution = None
        if self.executions > 1:
            n = len(self._runs)
            execution = runs.start_run(FAMILY, run_name=f"trial {trial.trial_id} execution {n}",
                                       parent_run_id=self.child_id, parent_experiment_id=self.experiment_id,
                                       tags={search_runs.SEARCH_TAG: self.search_id, search_runs.EXECUTION_TAG: str(n)})
        self._runs.append(tracker)
        try:
            result = build_and_fit(trial, *args, **kwargs)
        except BaseException as exc:
            if tracker.record is None:  # the build failed: no fit began, nothing to read from the callback
                self.tracker = None
                self._runs.remove(tracker)
            if execution is not None:
                settle(tracker)
                runs.end_run(execution.info.run_id, exc)
            raise
        finally:
            tracker.release()
        if execution is not None:
            settle(tracker)
            runs.end_run(execution.info.run_id)
        return result

    def end(self, trial) -> None:
        """Several executions: the trial's child holds their mean (val_loss per epoch, best_val_loss,
        model_val_loss: what ranks the trial when keras-tuner names no best one)."""
        if self.executions > 1 and self._runs:
            self._log_mean()
        super().end(trial)

    def _log_mean(self) -> None:
        curves = [t.history.get("val_loss", []) for t in self._runs]
        length = min(len(c) for c in curves)
        for epoch in range(length):
            mlflow.log_metric("val_loss", float(np.mean([c[epoch] for c in curves])), step=epoch)
        for key in ("best_val_loss", "model_val_loss"):
            values = [t.summary().get(key, math.nan) for t in self._runs]
            if all(math.isfinite(v) for v in values):
                mlflow.log_metric(key, float(np.mean(values)))


class _UserTrialRuns(TrialRuns):
    """The tune mixin, plus the fit of each execution."""

    def _build_and_fit_model(self, trial, *args, **kwargs):
        return self.bridge.fit(super()._build_and_fit_model, trial, *args, **kwargs)


def _search_id(tuner) -> str:
    """keras-tuner's project folder names the search: the same folder resumes it."""
    folder = os.path.abspath(tuner.project_dir)
    return f"{tuner.project_name}-{hashlib.sha1(folder.encode()).hexdigest()[:10]}"


def _experiment_id() -> str:
    active = mlflow.active_run()
    if active is not None:
        return active.info.experiment_id
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    return experiments.ensure(os.environ.get("MLFLOW_EXPERIMENT_NAME"))


def _parent_params(tuner) -> dict:
    oracle = tuner.oracle
    objective = getattr(oracle.objective, "name", str(oracle.objective))
    return {"tuner.class": type(tuner).__name__, "tuner.project_name": tuner.project_name,
            "tuner.objective": objective, "tuner.max_trials": str(getattr(oracle, "max_trials", None)),
            "tuner.executions_per_trial": str(getattr(tuner, "executions_per_trial", 1)),
            "tuner.hypermodel": type(tuner.hypermodel).__name__}


def tracked_search(tuner, search, args, kwargs, callback_kwargs: dict):
    """`search(tuner, *args, **kwargs)` inside a parent run, each trial a nested child.

    A tuner whose oracle already holds trials (keras-tuner reloaded the project folder,
    overwrite=False) continues the parent of that folder; keras-tuner runs again only the
    trials it never completed, and a child of such a trial is replaced, not doubled.
    """
    search_id = _search_id(tuner)
    experiment_id = _experiment_id()
    parent = search_runs.find_parent(search_id, experiment_id, autologged=True) if tuner.oracle.trials else None
    active = mlflow.active_run()
    if parent is not None:
        run = mlflow.start_run(run_id=parent.info.run_id, nested=active is not None)
    else:
        tags = {runs.FAMILY_TAG: FAMILY, search_runs.SEARCH_TAG: search_id,
                search_runs.PROJECT_TAG: os.path.abspath(tuner.project_dir),
                **({runs.PARENT_TAG: active.info.run_id} if active is not None else {})}
        run = mlflow.start_run(experiment_id=experiment_id, run_name=f"{type(tuner).__name__} {tuner.project_name}",
                               tags=tags, nested=active is not None)
    parent_id = run.info.run_id
    own_class = type(tuner)
    bridge = _UserBridge(parent_id, experiment_id, search_id, int(getattr(tuner, "executions_per_trial", 1)),
                         callback_kwargs, resumed=parent is not None)
    try:
        if parent is None:
            mlflow.log_params(_parent_params(tuner))
        tuner.__class__ = type(f"Mlflow{own_class.__name__}", (_UserTrialRuns, own_class), {"bridge": bridge})
        try:
            result = search(tuner, *args, **kwargs)
        finally:
            tuner.__class__ = own_class
        search_runs.summarize_search(tuner, parent_id, experiment_id)
    except BaseException as exc:
        bridge.abort(exc)
        runs.end_run(parent_id, exc)
        raise
    runs.end_run(parent_id)
    return result


def _tracks(tuner) -> bool:
    """A user's Keras tuner, in one process: not `mlflow-dl tune`'s own (it tracks itself), nor a
    keras-tuner distributed chief/worker (their trials are in other processes: `mlflow-dl tune`), which
    keras-tuner's documented KERASTUNER_ORACLE_IP variable announces."""
    return (isinstance(tuner, kt.Tuner) and not isinstance(tuner, TrialRuns)
            and "KERASTUNER_ORACLE_IP" not in os.environ)


def patch(callback_kwargs: dict) -> None:
    """Wrap keras-tuner's `search` (until `unpatch`); idempotent, the latest kwargs win."""
    global _patched
    if _patched is None:
        owner = next((c for c in kt.Tuner.__mro__ if "search" in vars(c)), None)
        if owner is None or not all(hasattr(kt.Tuner, h) for h in ("on_trial_begin", "on_trial_end", "project_dir")):
            warnings.warn(f"mlflow_dl.autolog: keras-tuner {kt.__version__} has no Tuner.search / on_trial_begin / "
                          "on_trial_end / project_dir as expected; its searches are tracked fit by fit only",
                          stacklevel=3)
            return
        _patched = (owner, vars(owner)["search"])
    owner, original = _patched

    @functools.wraps(original)
    def search(self, *args, **kwargs):
        if not _tracks(self):
            return original(self, *args, **kwargs)
        return tracked_search(self, original, args, kwargs, callback_kwargs)

    owner.search = search


def unpatch() -> None:
    global _patched
    if _patched is not None:
        owner, original = _patched
        owner.search = original
        _patched = None
