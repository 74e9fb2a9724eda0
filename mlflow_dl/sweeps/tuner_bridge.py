"""keras-tuner's hooks as MLflow runs: each trial a child run of the search's parent, tracked by MlflowCallback.

keras-tuner stays in charge (oracles, state on disk, distributed mode); the bridge only uses documented hooks:
`on_trial_begin` / `on_trial_end` open and close the child run, the HyperModel's `fit` appends `MlflowCallback`.
The search around them is sweeps/tuning.py (`mlflow-dl tune`) or sweeps/user_search.py (a user's, under autolog).
"""

from __future__ import annotations

import os

import keras
import keras_tuner as kt
import mlflow
from mlflow.entities import RunTag

from mlflow_dl.runtime import tf_runtime
from mlflow_dl.config import TrialSpec
from mlflow_dl.errors import TrainingError
from mlflow_dl.sweeps import search_space as space_module
from mlflow_dl.models.mlp import build_mlp
from mlflow_dl.sweeps.search_runs import FAMILY, HYPERBAND_TAGS, SEARCH_TAG, STATUS_TAG, TRIAL_TAG, child_row
from mlflow_dl.delivery import runs, uris
from mlflow_dl.fit.callback import MlflowCallback
from mlflow_dl.tags import PRUNED_REASON_TAG, PRUNED_TAG


def settle(tracker: MlflowCallback | None) -> None:
    """Before a trial's run ends: what its fit queued goes first. A server gone (one probe) is not waited
    for: the journal then holds the records and the end, in order, for `mlflow-dl sync`."""
    if tracker is not None and tracker.client is not None and uris.reachable(tracker.client.tracking_uri):
        tracker.delivered()


# -- the bridge: keras-tuner hooks -> child runs ----------------------------------
class Bridge:
    """What the tuner's hooks share while one trial runs: its child run and its callback. What a trial logs
    and how it fits is the search's own: TuneBridge (`mlflow-dl tune`), user_search's (a user's search)."""

    def __init__(self, parent_id: str, experiment_id: str, search_id: str, echo, resumed: bool = False):
        """`resumed`: the parent existed before this process, so a trial may have a child already."""
        self.parent_id, self.experiment_id, self.search_id, self.echo = parent_id, experiment_id, search_id, echo
        self.child_id: str | None = None
        self.tracker: MlflowCallback | None = None
        self.resumed = resumed
        self._begun: set[str] = set()  # trial ids this process began (keras-tuner may run one again)
        self._tags: dict[str, str] = {}  # the running trial's
        # each trial this process ended, as children_table reads it from MLflow: the summary when
        # the server went away during the search (delivery/failover.py) and the children are in two stores
        self.ended: dict[str, tuple[dict, list[float]]] = {}

    @property
    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient()  # the current tracking URI: the offline store once failed over

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
        """The child's params, logged when its trial begins: each search's own."""
        raise NotImplementedError

    def _forget_earlier_attempt(self, trial_id: str) -> None:
        """A trial keras-tuner runs again (resumed after a crash, retried) keeps one child: the last."""
        for old in self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{runs.PARENT_TAG}` = '{self.parent_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'"):
            if old.info.status == "RUNNING":
                self.client.set_terminated(old.info.run_id, "KILLED")
            self.client.delete_run(old.info.run_id)

    def abort(self, error: BaseException) -> None:
        """Ctrl-C (or a crash) inside a trial: keras-tuner never calls on_trial_end, so end the child here."""
        try:
            running = self.child_id and self.client.get_run(self.child_id).info.status == "RUNNING"
        except Exception as exc:  # the server is gone: the journal ends the child with `mlflow-dl sync`
            if not uris.connection_lost(exc):
                raise
            running = True
        if running:
            runs.end_run(self.child_id, error)

    def end(self, trial) -> None:
        """Close the child: FINISHED for a completed trial, FAILED (reason tagged) otherwise."""
        status = trial.status
        tracker = self.tracker
        error = None
        if tracker is not None and (diverged := tracker.divergence()) is not None:
            status, error = "INVALID", TrainingError(diverged)
        elif status != "COMPLETED":
            last = (trial.message or "").strip().splitlines()
            error = RuntimeError(f"trial {status.lower()}: {last[-1] if last else 'no message'}")
        settle(tracker)
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
            child_row(self.child_id, "FINISHED" if error is None else "FAILED", metrics, params, tags),
            list(tracker.history.get("val_loss", [])) if tracker else [])
        best = metrics.get("model_val_loss", float("nan"))
        self.echo(f"{_run_name(trial.trial_id, trial.hyperparameters.values)}: {status.lower()}, model_val_loss={best:.4g}")


class TuneBridge(Bridge):
    """`mlflow-dl tune`'s trials: the model built from the search space, fitted on the search's data."""

    def __init__(self, parent_id: str, experiment_id: str, search_id: str, base: TrialSpec, space: dict, ds, splits,
                 echo, model: str = "mlp", resumed: bool = False):
        super().__init__(parent_id, experiment_id, search_id, echo, resumed)
        self.base, self.space, self.ds, self.splits, self.model = base, space, ds, splits, model
        self.spec_for = space_module.SPECS[model]
        self.prune = None  # the search's PruneSpec (its Optuna study) when `tune` prunes: not with Hyperband

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

    def log_trial(self, trial_id: str, searched: dict) -> None:
        """The child's params: the trial's values as `hp.*`, and what the search shares."""
        from mlflow_dl.training.trial import dataset_input

        spec = self.spec_for(self.base, searched)
        mlflow.log_params({**spec.params(), **{f"hp.{k}": v for k, v in searched.items()}, "trial": trial_id})
        runs.log_dataset(dataset_input(self.ds))

    def fit(self, hp, model, *args, callbacks=(), **kwargs):
        """One trial's fit on its data: MlflowCallback (and the pruning rule's) after keras-tuner's callbacks."""
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
                    RunTag(PRUNED_TAG, str(pruning.pruned_at)),
                    RunTag(PRUNED_REASON_TAG, pruning.reason)])
                self._tags[PRUNED_TAG] = str(pruning.pruned_at)
            prune_callback.finish(pruning, self.tracker.summary().get("model_val_loss"))
        return history


def _run_name(trial_id: str, values: dict) -> str:
    """`trial 03 2x64 lr=0.00123 dropout=0.2`: what differs between trials."""
    parts = [f"trial {trial_id}"]
    if "layers" in values and "nodes" in values:
        parts.append(f"{values['layers']}x{values['nodes']}")
    parts += [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
              for k, v in values.items() if k not in ("layers", "nodes") and not k.startswith("tuner/")]
    return " ".join(parts)


class SearchModel(kt.HyperModel):
    """build(hp) from the search space; fit() with MlflowCallback after the tuner's callbacks."""

    def __init__(self, bridge: TuneBridge):
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
