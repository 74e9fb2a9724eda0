"""keras-tuner searches as MLflow runs: one parent per search, one nested child per trial.

keras-tuner stays in charge (oracles, state on disk, distributed mode); the bridge only uses documented hooks:
`on_trial_begin` / `on_trial_end` open and close the child run, the HyperModel's `fit` appends `MlflowCallback`.
The parent's summary is read back from MLflow, so resumed and other workers' trials are included.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass

import keras
import keras_tuner as kt
import mlflow
import pandas as pd
from mlflow.entities import RunTag

from mlflow_dl.runtime import heap, tf_runtime
from mlflow_dl.config import ModelSpec, TrialSpec
from mlflow_dl.errors import ConfigError, TrainingError
from mlflow_dl.sweeps import search_space as space_module
from mlflow_dl.models.mlp import build_mlp
from mlflow_dl.training import pruning as pruning_module
from mlflow_dl.sweeps import compare
from mlflow_dl.sweeps.search_plan import SearchPlan, distributed_role, plan_search  # noqa: F401 (distributed_role: API)
from mlflow_dl.sweeps.trial_specs import Axis
from mlflow_dl.delivery import failover, runs
from mlflow_dl.fit import plots
from mlflow_dl.fit.callback import MlflowCallback

FAMILY = "tune"
SEARCH_TAG = "mlflow_dl.search_id"
TRIAL_TAG = "tuner/trial_id"
STATUS_TAG = "tuner/status"
HYPERBAND_TAGS = ("tuner/bracket", "tuner/round", "tuner/epochs")
# parent params a resumed search must share with the search it continues
SEARCH_PARAMS = ("tune.tuner", "tune.model", "tune.epochs", "tune.space", "data.dataset", "data.target", "data.seed")
AXIS = Axis(key=None, label="trial")
WORKER_WAIT_SECONDS = 300  # a worker's longest wait for its chief, and for any one oracle call
ORACLE_GRACE_SECONDS = 60  # an ended search whose oracle stays silent this long is complete


@dataclass(frozen=True)
class TuneResult:
    parent_run_id: str
    search_id: str
    role: str  # single | chief | worker
    table: pd.DataFrame  # one row per child run (empty on a worker)
    best_run_id: str | None


# -- the parent run -------------------------------------------------------------
def find_parent(search_id: str, experiment_id: str):
    """The parent run of a search, found by its tag (None if the search is new)."""
    found = mlflow.MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.`{SEARCH_TAG}` = '{search_id}' and tags.`{runs.FAMILY_TAG}` = '{FAMILY}'",
        max_results=10)
    parents = [r for r in found if runs.PARENT_TAG not in r.data.tags]
    return min(parents, key=lambda r: r.info.start_time) if parents else None


def _check_same_search(parent, params: dict[str, str], search_id: str) -> None:
    for key in SEARCH_PARAMS:
        old, new = parent.data.params.get(key), params.get(key)
        if old is not None and old != new:
            raise ConfigError(f"{key}={new!r} differs from search {search_id!r} ({key}={old!r}); "
                              "resume it with the same settings or pick a new --search-id")


# -- the bridge: keras-tuner hooks -> child runs ----------------------------------
class Bridge:
    """What the tuner's hooks share while one trial runs: its child run and its callback."""

    def __init__(self, parent_id: str, experiment_id: str, search_id: str, base: TrialSpec, space: dict, ds, splits,
                 echo, model: str = "mlp", resumed: bool = False):
        """`resumed`: the parent existed before this process, so a trial may have a child already."""
        self.parent_id, self.experiment_id, self.search_id = parent_id, experiment_id, search_id
        self.base, self.space, self.ds, self.splits, self.echo, self.model = base, space, ds, splits, echo, model
        self.spec_for = space_module.SPECS[model]
        self.child_id: str | None = None
        self.tracker: MlflowCallback | None = None
        self.resumed = resumed
        self._begun: set[str] = set()  # trial ids this process began (keras-tuner may run one again)
        self._tags: dict[str, str] = {}  # the running trial's
        # each trial this process ended, as children_table reads it from MLflow: the summary when
        # the server went away during the search (delivery/failover.py) and the children are in two stores
        self.ended: dict[str, tuple[dict, list[float]]] = {}
        self.prune = None  # the search's PruneSpec (its Optuna study) when `tune` prunes: not with Hyperband

    @property
    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient()  # the current tracking URI: the offline store once failed over

    def build(self, hp) -> keras.Model:
        spec = self.spec_for(self.base, space_module.declare(hp, self.space))
        s = self.splits
        if self.model == "recurrent":
            from mlflow_dl.models.recurrent import build_recurrent

            return build_recurrent(spec.model, spec.data.timesteps, len(s.preprocessing.columns), spec.fit.lr)
        return build_mlp(spec.model, s.x_train.shape[1], s.preprocessing.task, s.n_classes, spec.fit.lr)

    def trial_splits(self, values: dict):
        """What one trial fits on: the MLP's arrays, or the windows of this trial's `timesteps`."""
        if self.model != "recurrent":
            return self.splits
        from mlflow_dl.models.window_splits import window_splits

        fit = self.base.fit
        return window_splits(self.splits, int(values["timesteps"]), self.base.data.horizon, fit.batch_size, fit.seed)

    def begin(self, trial) -> None:
        values = trial.hyperparameters.values
        searched = {k: v for k, v in values.items() if not k.startswith("tuner/")}
        if self.resumed or trial.trial_id in self._begun:
            self._forget_earlier_attempt(trial.trial_id)
        self._begun.add(trial.trial_id)
        tags = {SEARCH_TAG: self.search_id, TRIAL_TAG: trial.trial_id,
                "tuner/tuner_id": os.environ.get("KERASTUNER_TUNER_ID", "tuner0"),
                **{k: str(values[k]) for k in HYPERBAND_TAGS if k in values}}
        run = runs.start_run(FAMILY, run_name=_run_name(trial.trial_id, searched), parent_run_id=self.parent_id,
                             tags=tags, parent_experiment_id=self.experiment_id)
        self.child_id, self.tracker, self._tags = run.info.run_id, None, tags
        self.log_trial(trial.trial_id, searched)

    def log_trial(self, trial_id: str, searched: dict) -> None:
        """The child's params: the trial's values as `hp.*`, and what the search shares."""
        from mlflow_dl.training.trial import dataset_input

        spec = self.spec_for(self.base, searched)
        mlflow.log_params({**spec.params(), **{f"hp.{k}": v for k, v in searched.items()}, "trial": trial_id})
        runs.log_dataset(dataset_input(self.ds))

    def _forget_earlier_attempt(self, trial_id: str) -> None:
        """A trial keras-tuner runs again (resumed after a crash, retried) keeps one child: the last."""
        for old in self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{runs.PARENT_TAG}` = '{self.parent_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'"):
            if old.info.status == "RUNNING":
                self.client.set_terminated(old.info.run_id, "KILLED")
            self.client.delete_run(old.info.run_id)

    def fit(self, hp, model, *args, callbacks=(), **kwargs):
        splits = self.trial_splits(hp.values)
        window = splits.preprocessing.window
        self.tracker = MlflowCallback(preprocessing=splits.preprocessing, restore_best_weights=True,
                                      input_example=splits.raw_test.head(5 + window), family=FAMILY,
                                      log_fit_params=False, log_datasets=False)  # begin() logs the spec's
        from mlflow_dl.training.trial import comparability_tags

        self.client.log_batch(self.child_id, tags=[RunTag(k, v) for k, v in
                                                   comparability_tags(self.ds, splits, self.base, model).items()])
        if self.model == "recurrent":  # batches of windows: x yields (window, target), batch size is theirs
            mlflow.log_params(splits.scored)  # the same target rows for every timesteps: say which
            kwargs.pop("batch_size", None)
            args, kwargs["validation_data"] = (splits.x_train,), splits.x_val
        pruning = None
        if self.prune is not None:  # the same Optuna rule as the sweeps', reported to by this trial's fit
            from mlflow_dl.training import prune_callback

            pruning = prune_callback.start(self.prune, int(kwargs.get("epochs") or self.base.fit.epochs))
        try:
            with tf_runtime.own_fit():  # in the CLI's process; nothing in a user's
                history = model.fit(*args, callbacks=[*callbacks, *([pruning] if pruning else []), self.tracker],
                                    **kwargs)
        except BaseException:
            if pruning is not None:
                prune_callback.finish(pruning, None, failed=True)
            raise
        finally:
            self.tracker.release()
        if pruning is not None:
            if pruning.pruned_at is not None:
                self.client.log_batch(self.child_id, tags=[
                    RunTag(pruning_module.PRUNED_TAG, str(pruning.pruned_at)),
                    RunTag(pruning_module.REASON_TAG, pruning.reason)])
                self._tags[pruning_module.PRUNED_TAG] = str(pruning.pruned_at)
            prune_callback.finish(pruning, self.tracker.summary().get("model_val_loss"))
        return history

    def abort(self, error: BaseException) -> None:
        """Ctrl-C (or a crash) inside a trial: keras-tuner never calls on_trial_end, so end the child here."""
        try:
            running = self.child_id and self.client.get_run(self.child_id).info.status == "RUNNING"
        except Exception as exc:  # the server is gone: the journal ends the child with `mlflow-dl sync`
            if not runs.connection_lost(exc):
                raise
            running = True
        if running:
            runs.end_run(self.child_id, error)

    def end(self, trial) -> None:
        """Close the child: FINISHED for a completed trial, FAILED (reason tagged) otherwise."""
        status = trial.status
        tracker = self.tracker
        error = None
        if tracker is not None and tracker.diverged_at is not None:
            status, error = "INVALID", TrainingError(tracker.divergence())
        elif status != "COMPLETED":
            last = (trial.message or "").strip().splitlines()
            error = RuntimeError(f"trial {status.lower()}: {last[-1] if last else 'no message'}")
        if tracker is not None:  # what its fit queued goes first
            tracker.delivered()
        status_tag = {STATUS_TAG: status.lower()}
        runs.end_run(self.child_id, error, tags=status_tag)
        tags = {**self._tags, **status_tag}  # the child's, for its row in a summary made offline
        metrics = tracker.summary() if tracker else {}
        params = {f"hp.{k}": str(v) for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
        if tracker is not None and tracker.model is not None:
            params["model.total_params"] = str(tracker.model.count_params())
        if error is not None:
            tags[runs.ERROR_TAG] = runs.error_text(error)
        self.ended[trial.trial_id] = (
            _row(self.child_id, "FINISHED" if error is None else "FAILED", metrics, params, tags),
            list(tracker.history.get("val_loss", [])) if tracker else [])
        best = metrics.get("model_val_loss", float("nan"))
        self.echo(f"{_run_name(trial.trial_id, trial.hyperparameters.values)}: {status.lower()}, model_val_loss={best:.4g}")


def _run_name(trial_id: str, values: dict) -> str:
    """`trial 03 2x64 lr=0.00123 dropout=0.2`: what differs between trials."""
    parts = [f"trial {trial_id}"]
    if "layers" in values and "nodes" in values:
        parts.append(f"{values['layers']}x{values['nodes']}")
    parts += [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
              for k, v in values.items() if k not in ("layers", "nodes") and not k.startswith("tuner/")]
    return " ".join(parts)


class _SearchModel(kt.HyperModel):
    """build(hp) from the search space; fit() with MlflowCallback after the tuner's callbacks."""

    def __init__(self, bridge: Bridge):
        super().__init__(name="mlflow_dl_search")
        self.bridge = bridge

    def build(self, hp):
        return self.bridge.build(hp)

    def fit(self, hp, model, *args, **kwargs):
        return self.bridge.fit(hp, model, *args, **kwargs)


class TrialRuns:
    """Mixed in before a keras-tuner Tuner: each trial's lifetime is its child run's."""

    bridge: Bridge

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self.bridge.begin(trial)

    def on_trial_end(self, trial):
        self.bridge.end(trial)  # before the oracle hears of it: a chief waits for every child
        super().on_trial_end(trial)

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        # keras-tuner imports tensorboard for every trial on the TF backend, even without a
        # TensorBoard callback; tensorflow 2.21 no longer installs it. Only patch when one is given.
        if any(type(c).__name__ == "TensorBoard" for c in callbacks):
            super()._configure_tensorboard_dir(callbacks, trial, execution)


def _make_tuner(kind: str, bridge: Bridge, max_trials: int, epochs: int, seed: int, directory: str, project: str):
    base = {"random": kt.RandomSearch, "grid": kt.GridSearch, "bayesian": kt.BayesianOptimization,
            "hyperband": kt.Hyperband}[kind]
    cls = type(f"Mlflow{base.__name__}", (TrialRuns, base), {"bridge": bridge})
    common = dict(hypermodel=_SearchModel(bridge), objective="val_loss", seed=seed, directory=directory,
                  project_name=project, overwrite=False)
    if kind == "hyperband":
        tuner = cls(max_epochs=epochs, factor=3, **common)
        tuner.oracle.max_trials = max_trials  # Hyperband has no such argument; its oracle honours it
        return tuner
    return cls(max_trials=max_trials, **common)


# -- the parent's summary ---------------------------------------------------------
def children_table(parent_id: str, experiment_id: str) -> tuple[pd.DataFrame, dict[str, dict]]:
    """One row per child (every invocation, every worker) and each child's val_loss curve."""
    client = mlflow.MlflowClient()
    children = client.search_runs([experiment_id], filter_string=f"tags.`{runs.PARENT_TAG}` = '{parent_id}'",
                                  max_results=5000)
    rows, histories = [], {}
    for r in sorted(children, key=lambda r: r.data.tags.get(TRIAL_TAG, "")):
        rows.append(_row(r.info.run_id, r.info.status, r.data.metrics, r.data.params, r.data.tags))
        histories[rows[-1]["trial"]] = {"val_loss": [
            x.value for x in sorted(client.get_metric_history(r.info.run_id, "val_loss"), key=lambda x: x.step)]}
    return pd.DataFrame(rows), histories


def _row(run_id: str, status: str, metrics: dict, params: dict, tags: dict) -> dict:
    """A child's row of the search's table."""
    return {
        "trial": f"trial {tags.get(TRIAL_TAG, '?')}", "trial_id": tags.get(TRIAL_TAG),
        **{k[3:]: v for k, v in sorted(params.items()) if k.startswith("hp.")},
        **{k: tags[k] for k in HYPERBAND_TAGS if k in tags},
        "model_val_loss": metrics.get("model_val_loss", float("nan")),
        "best_val_loss": metrics.get("best_val_loss", float("nan")),
        "best_epoch": metrics.get("best_epoch", float("nan")),
        "train_loss_at_best": metrics.get("best_epoch_loss", float("nan")),
        "total_params": float(params.get("model.total_params", "nan")),
        "status": status, "tuner_status": tags.get(STATUS_TAG, ""),
        "pruned_at_epoch": float(tags.get(pruning_module.PRUNED_TAG, "nan")),
        "error": tags.get(runs.ERROR_TAG, ""), "run_id": run_id,
    }


def _ended_table(bridge: Bridge) -> tuple[pd.DataFrame, dict[str, dict]]:
    """children_table of the trials this process ran, from what it kept of them (no server needed)."""
    ended = [bridge.ended[k] for k in sorted(bridge.ended)]
    return (pd.DataFrame([row for row, _ in ended]),
            {row["trial"]: {"val_loss": curve} for row, curve in ended})


def _summarize(tuner, parent_id: str, experiment_id: str, bridge: Bridge) -> tuple[pd.DataFrame, str | None]:
    """The search's summary (summarize_search), then the best model on the test split."""
    from mlflow_dl.training.trial import test_metrics, test_outputs, test_plot

    offline = failover.failed_over()  # some children on the server, the rest in the offline store
    table, best_run_id, values = summarize_search(tuner, parent_id, experiment_id,
                                                  _ended_table(bridge) if offline else None)
    if best_run_id is None:
        return table, None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=best_run_id, artifact_path="checkpoints/best.keras",
                                                       dst_path=tmp)
            model = keras.saving.load_model(path, safe_mode=True)
        except Exception:
            if not offline:
                raise
            # the best child is on the server, which is gone: keras-tuner's checkpoint of that trial
            # (the same best epoch by val_loss, its objective)
            model = tuner.get_best_models(1)[0]
    splits = bridge.trial_splits(values)
    raw, loss = test_outputs(model, splits)
    mlflow.log_metrics(test_metrics(splits, raw, loss))
    artifact, fig = test_plot(splits, raw)
    mlflow.log_figure(fig, artifact)
    plots.close(fig)
    return table, best_run_id


def _best_child(tuner, finished: pd.DataFrame) -> pd.Series | None:
    """keras-tuner's best trial (its objective, its direction) among the finished children; the lowest
    model_val_loss (compare.best_row) when keras-tuner names none of them."""
    try:
        best_trials = tuner.oracle.get_best_trials(1)
    except Exception:  # noqa: BLE001 - an oracle without scores: fall back to val_loss
        best_trials = []
    ids = {t.trial_id for t in best_trials}
    kept = finished[finished["pruned_at_epoch"].isna()] if "pruned_at_epoch" in finished else finished
    finished = kept if len(kept) else finished  # a pruned trial is the best only when no other finished
    mine = finished[finished["trial_id"].isin(ids)]
    return mine.iloc[0] if len(mine) else compare.best_row(finished)


def summarize_search(tuner, parent_id: str, experiment_id: str,
                     children: tuple[pd.DataFrame, dict] | None = None) -> tuple[pd.DataFrame, str | None, dict]:
    """On the active parent run: results.csv, results_summary.txt, counts, `best_run_id`,
    best_hyperparameters.json and the comparison figures. Returns the table, the best child's
    run id and its hyper-parameters. `children`: the table and curves, when not read from MLflow."""
    table, histories = children or children_table(parent_id, experiment_id)
    finished = table[table["status"] == "FINISHED"] if len(table) else table
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(os.path.join(tmp, "results.csv"), index=False)
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            tuner.results_summary(num_trials=max(1, len(tuner.oracle.trials)))
        with open(os.path.join(tmp, "results_summary.txt"), "w") as f:
            f.write(text.getvalue())
        mlflow.log_artifacts(tmp)
    mlflow.log_metrics({"n_trials": len(table), "n_finished": len(finished),
                        "n_failed": int((table["status"] == "FAILED").sum()) if len(table) else 0})
    if not len(finished):
        return table, None, {}
    best = _best_child(tuner, finished)
    if best is None:
        return table, None, {}
    best_run_id = best["run_id"]
    mlflow.set_tag("best_run_id", best_run_id)
    trial = tuner.oracle.trials.get(best["trial_id"])
    values = trial.hyperparameters.values if trial is not None else {}
    mlflow.log_dict({k: v for k, v in values.items() if not k.startswith("tuner/")}, "best_hyperparameters.json")
    hp_columns = [h.name for h in tuner.oracle.hyperparameters.space if h.name in table.columns]
    figures, _ = compare.comparison_figures(table, histories, AXIS)
    figures.update(compare.value_figures(table, hp_columns))
    for artifact, fig in figures.items():
        mlflow.log_figure(fig, artifact)
        plots.close(fig)
    return table, best_run_id, values


# -- the search ---------------------------------------------------------------------
def tune(data=None, tuner: str = "random", max_trials: int = 10, epochs: int = 10,
         space: str | None = None, model: str = "mlp", search_id: str | None = None, batch_size: int = 32,
         experiment: str | None = None, directory: str = "keras_tuner", allow_remote_oracle: bool = False,
         echo=print, prune=None) -> TuneResult:
    """Run (or resume, same `search_id`) a keras-tuner search with every trial an MLflow child run.

    `data` is a DataSpec (model="mlp", default breast_cancer) or, for model="recurrent", a SeriesSpec; all input is
    checked before a run or tuner starts. In keras-tuner's distributed mode the chief serves the oracle and writes
    the parent's summary; each worker logs its trials under the same parent (found by the search id). `prune`:
    True (or a PruneSpec) stops trials by the sweeps' Optuna rule; with tuner="hyperband" Hyperband is the pruner.
    """
    plan = plan_search(data, tuner, max_trials, epochs, space, model, search_id, batch_size, allow_remote_oracle)
    return run_search(plan, experiment=experiment, directory=directory, echo=echo, prune=prune)


def _pruning(prune, tuner: str, parent_id: str):
    """The search's PruneSpec with its study made (every process of the search opens the same one); None
    for Hyperband, whose brackets already stop trials early and resume them from checkpoints."""
    prune = pruning_module.as_spec(prune)
    if prune is None or tuner == "hyperband":
        return None
    return pruning_module.start_study(prune, mlflow.get_tracking_uri(), parent_id)


def run_search(plan: SearchPlan, experiment: str | None = None, directory: str = "keras_tuner",
               echo=print, prune=None) -> TuneResult:
    """Run a search `search_plan.plan_search` checked (and loaded the data of): the parent run, the trials."""
    pruning_module.as_spec(prune)  # a bad value fails before any run
    data, tuner, model, space_map, search_id, role = (plan.data, plan.tuner, plan.model, plan.space_map,
                                                      plan.search_id, plan.role)
    max_trials, epochs, batch_size, fit, ds, splits = (plan.max_trials, plan.epochs, plan.batch_size, plan.fit,
                                                       plan.ds, plan.splits)
    base = TrialSpec(data=data, model=ModelSpec(), fit=fit)  # the model part is replaced per trial
    params = {**{k: v for k, v in base.params().items() if k.startswith("data.")},
              "tune.tuner": tuner, "tune.model": model, "tune.epochs": str(epochs), "tune.search_id": search_id,
              "tune.space": space_module.space_json(space_map), "fit.batch_size": str(batch_size)}
    experiment_id = runs.ensure_experiment(experiment)
    parent = find_parent(search_id, experiment_id)
    if parent is not None:
        _check_same_search(parent, params, search_id)

    if role == "worker":
        parent = _wait_for_parent(search_id, experiment_id)
        if parent.info.status != "RUNNING":
            echo(f"search {search_id} is already complete (parent run {parent.info.run_id}); nothing left to run")
            return TuneResult(parent.info.run_id, search_id, role, pd.DataFrame(), None)
        # keras-tuner waits up to an hour for an oracle that is gone; the chief is up by now. A private
        # module: if it moved, keras-tuner's own hour stands (README, "Workarounds")
        try:
            from keras_tuner.src.distribute import oracle_client

            oracle_client.TIMEOUT = WORKER_WAIT_SECONDS
        except ImportError:
            pass
        bridge = Bridge(parent.info.run_id, experiment_id, search_id, base, space_map, ds, splits, echo, model,
                        resumed=True)
        bridge.prune = _pruning(prune, tuner, parent.info.run_id)
        return _search(bridge, role, tuner, max_trials, epochs, directory)

    run = (mlflow.start_run(run_id=parent.info.run_id) if parent is not None else
           runs.start_run(FAMILY, run_name=f"tune {tuner} {search_id}", experiment=experiment,
                          tags={SEARCH_TAG: search_id}))
    run_id = run.info.run_id
    try:
        if parent is None:
            mlflow.log_params(params)
        else:
            echo(f"resuming search {search_id} (parent run {run_id})")
        mlflow.set_tag("tune.max_trials", str(max_trials))
        bridge = Bridge(run_id, run.info.experiment_id, search_id, base, space_map, ds, splits, echo, model,
                        resumed=parent is not None)
        bridge.prune = _pruning(prune, tuner, run_id)
        if pruning_module.as_spec(prune) is not None:
            mlflow.set_tag("tune.prune", "keras-tuner Hyperband" if tuner == "hyperband"
                           else bridge.prune.describe(epochs))
        result = _search(bridge, role, tuner, max_trials, epochs, directory)
    except BaseException as exc:
        runs.end_run(run_id, exc)
        raise
    runs.end_run(run_id)
    return result


def _oracle_answers() -> bool:
    """Is anything listening at KERASTUNER_ORACLE_IP:PORT (a chief serving, or starting to)?"""
    address = (os.environ["KERASTUNER_ORACLE_IP"].strip("[]"), int(os.environ["KERASTUNER_ORACLE_PORT"]))
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


def _wait_for_parent(search_id: str, experiment_id: str):
    """A worker joins a search its chief is running: the parent exists and is RUNNING (a resumed one is reopened).

    A worker that starts after the others have run every trial finds the parent ended
    and no oracle listening: once that lasts ORACLE_GRACE_SECONDS (long enough for a
    chief that resumes the search to reopen it), the ended parent is returned.
    """
    deadline = time.time() + WORKER_WAIT_SECONDS
    silent_since = None
    while time.time() < deadline:
        parent = find_parent(search_id, experiment_id)
        if parent is not None and parent.info.status == "RUNNING":
            return parent
        if parent is not None and parent.info.status == "FINISHED" and not _oracle_answers():
            silent_since = silent_since or time.time()
            if time.time() - silent_since >= ORACLE_GRACE_SECONDS:
                return parent
        else:
            silent_since = None
        time.sleep(1)
    raise ConfigError(f"search_id={search_id!r} has no running parent run after {WORKER_WAIT_SECONDS}s; "
                      "expected the chief (KERASTUNER_TUNER_ID=chief) to be running that search")


def _finished_without_us(parent_id: str, grace: float = 60.0) -> bool:
    """After a gRPC error on a worker: did the chief end the search (parent FINISHED) meanwhile?"""
    client = mlflow.MlflowClient()
    deadline = time.time() + grace
    while time.time() < deadline:
        status = client.get_run(parent_id).info.status
        if status != "RUNNING":
            return status == "FINISHED"
        time.sleep(1)
    return False


def _search(bridge: Bridge, role: str, kind: str, max_trials: int, epochs: int, directory: str) -> TuneResult:
    """Run keras-tuner's search; the chief (or the only process) then summarises on the parent."""
    run_id, search_id, splits = bridge.parent_id, bridge.search_id, bridge.splits
    tuner = _make_tuner(kind, bridge, max_trials, epochs, bridge.base.data.seed, directory, search_id)
    # the recurrent model's windows depend on the trial (timesteps): its fit takes them, not search's args
    data = () if bridge.model == "recurrent" else (splits.x_train, splits.y_train)
    validation = None if bridge.model == "recurrent" else (splits.x_val, splits.y_val)
    # the heap frozen through the summary too: let go before it, its first full collection would scan
    # all that TensorFlow loaded inside the parent run
    with heap.frozen():
        try:
            tuner.search(*data, validation_data=validation, epochs=epochs, batch_size=bridge.base.fit.batch_size,
                         verbose=0)
        except BaseException as exc:
            bridge.abort(exc)
            # the chief stops serving once every trial is done: a worker asking just then gets a gRPC error
            if role == "worker" and type(exc).__module__.startswith("grpc") and _finished_without_us(run_id):
                bridge.echo(f"search {search_id} was completed by the other workers")
                return TuneResult(run_id, search_id, role, pd.DataFrame(), None)
            raise
        if role == "worker":
            return TuneResult(run_id, search_id, role, pd.DataFrame(), None)
        failover.follow(run_id)  # the server went away during the trials: the summary goes offline too
        table, best_run_id = _summarize(tuner, run_id, bridge.experiment_id, bridge)
    return TuneResult(run_id, search_id, role, table, best_run_id)


def best_hyperparameters(parent_run_id: str) -> dict:
    """The best trial's hyper-parameters, as logged on the parent (`best_hyperparameters.json`)."""
    return json.loads(mlflow.artifacts.load_text(f"runs:/{parent_run_id}/best_hyperparameters.json"))
