"""One trial: build the model of a spec, fit it inside an MLflow run, evaluate on test.

Every family runs its trials through `run_trial`, so every run, whether alone
(`train`) or a child of a sweep, holds the same params, metrics and artifacts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import keras
import mlflow
import numpy as np
from mlflow.entities import Param, RunTag

from mlflow_dl.runtime import heap, tf_runtime, trial_state
from mlflow_dl.config import TrialSpec
from mlflow_dl.data.datasets import Dataset
from mlflow_dl.data.split import Splits
from mlflow_dl.errors import TrainingError
from mlflow_dl.models.mlp import build_mlp
from mlflow_dl.fit import best as best_rule
from mlflow_dl.fit import comparability, fit_datasets, plots
from mlflow_dl.delivery import runs, uris
from mlflow_dl.fit.callback import MlflowCallback

DIRECT_ROWS = 10_000  # test splits up to this size are predicted in one direct call


@dataclass(frozen=True)
class TrialResult:
    run_id: str
    status: str  # FINISHED | FAILED
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    history: dict = field(default_factory=dict)  # per-epoch values under Keras' names
    pruned_at_epoch: int | None = None  # the epoch a sweep's pruner stopped the fit at (the run is FINISHED)

    @property
    def best_val_loss(self) -> float:
        return self.metrics.get("best_val_loss", float("nan"))

    def describe(self) -> str:
        """The line a fitted run prints: its status; model_val_loss at model_epoch, the validation data loss of
        the weights its model holds, what promote and sweeps rank (best_val_loss, the lowest val_loss of any
        epoch, differs with a weight penalty or --no-restore-best-weights); and its test metrics."""
        m = self.metrics
        if "model_val_loss" in m:
            loss = f"model_val_loss={m['model_val_loss']:.4g} at epoch {m.get('model_epoch', m.get('best_epoch'))}"
        elif "best_val_loss" in m:  # no candidate weights (none finite): the lowest val_loss seen, no epoch to name
            loss = f"best_val_loss={m['best_val_loss']:.4g} (no model_val_loss)"
        else:
            loss = "no val_loss"
        tests = ", ".join(f"{k}={v:.4g}" for k, v in m.items() if k.startswith("test_"))
        return f"run {self.run_id} {self.status}: {loss}; {tests}"


_last_input: tuple = (None, None)  # (dataset, its MLflow input): a sweep's trials share one data set


def dataset_input(ds: Dataset):
    """MLflow dataset lineage: name, digest and source of the rows used (the digest hashes
    the rows, so it is computed once per data set, not once per trial)."""
    global _last_input
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.sources import LocalArtifactDatasetSource

    if _last_input[0] is ds:
        return _last_input[1]
    source = (CodeDatasetSource({"loader": ds.source}) if ds.source.startswith("sklearn.")
              else LocalArtifactDatasetSource(ds.source))
    dataset = mlflow.data.from_pandas(ds.frame, source=source, name=ds.name, targets=str(ds.y.name),
                                      digest=fit_datasets.digest((ds.frame, None)))  # all rows; MLflow hashes 10,000
    _last_input = (ds, dataset)
    return dataset


def comparability_tags(ds: Dataset, splits: Splits, spec: TrialSpec, model: keras.Model) -> dict[str, str]:
    """The run's comparability key and its parts: what its val_loss measures (tracking.comparability)."""
    data = spec.data
    horizon = getattr(data, "horizon", None)  # a series (SeriesSpec): chronological split, a horizon
    return comparability.tags(
        dataset=ds.name, digest=dataset_input(ds).digest, target=str(ds.y.name), task=splits.preprocessing.task,
        loss=comparability.loss_name(model), scale_y=bool(data.scale_y),
        split=comparability.split_text(data.seed, data.val_fraction, data.test_fraction, horizon is not None),
        horizon=horizon)


def test_outputs(model: keras.Model, splits: Splits) -> tuple[np.ndarray, float]:
    """The model's raw outputs and its loss on the test split.

    In-memory rows go through one direct call: `model.predict` and `model.evaluate` would
    each trace a function for this model, every trial. A streamed feed (time-series
    windows) and very large splits go through Keras' batched loops.
    """
    x, y = splits.x_test, splits.y_test
    rows = len(next(iter(x.values()))) if isinstance(x, dict) else len(x) if isinstance(x, np.ndarray) else None
    if y is not None and rows is not None and rows <= DIRECT_ROWS:
        raw = model(x, training=False)
        loss = model.compute_loss(x=x, y=y, y_pred=raw, training=False)
        return keras.ops.convert_to_numpy(raw), float(keras.ops.convert_to_numpy(loss))
    raw = model.predict(x, batch_size=1024, verbose=0)
    return raw, float(model.evaluate(x, y, verbose=0, return_dict=True)["loss"])


def test_metrics(splits: Splits, raw: np.ndarray, loss: float) -> dict[str, float]:
    """Test-split metrics from `test_outputs`; regression ones on the original scale of y."""
    from sklearn import metrics as m

    prep = splits.preprocessing
    out = {"test_loss": loss}
    y = splits.y_test
    if prep.task == "regression":
        y_true, y_pred = splits.y_test_original.astype(float), prep.inverse_y(raw[:, 0])
        nonzero = y_true != 0
        out.update(
            test_mae=m.mean_absolute_error(y_true, y_pred),
            test_rmse=float(np.sqrt(m.mean_squared_error(y_true, y_pred))),
            test_r2=m.r2_score(y_true, y_pred) if len(y_true) > 1 else float("nan"),
            test_mape=float(np.mean(np.abs((y_true[nonzero] - y_pred[nonzero]) / y_true[nonzero]))) if nonzero.any() else float("nan"),
        )
        return out
    if prep.task == "binary":
        proba = raw[:, 0]
        pred = (proba >= 0.5).astype(int)
        if len(np.unique(y)) == 2:
            out["test_auc"] = m.roc_auc_score(y, proba)
    else:
        pred = raw.argmax(axis=1)
        if len(np.unique(y)) == raw.shape[1]:
            out["test_auc"] = m.roc_auc_score(y, raw, multi_class="ovr")
    out["test_accuracy"] = m.accuracy_score(y, pred)
    return {k: float(v) for k, v in out.items()}


def test_plot(splits: Splits, raw: np.ndarray):
    """(artifact path, figure): predicted against actual, or the confusion matrix, from `test_outputs`."""
    prep = splits.preprocessing
    if prep.task == "regression":
        return "plots/predicted_vs_actual.png", plots.predicted_vs_actual(splits.y_test_original, prep.inverse_y(raw[:, 0]))
    pred = (raw[:, 0] >= 0.5).astype(int) if prep.task == "binary" else raw.argmax(axis=1)
    return "plots/confusion_matrix.png", plots.confusion_matrix(splits.y_test, pred, prep.classes)


class DataLoss(keras.callbacks.Callback):
    """Puts `val_data_loss` (val_loss without the weight penalty) in each epoch's logs, first in the list, so a
    family's EarlyStopping and its MlflowCallback choose the epoch on what ranks the trials. The families' own
    fits only: a user's logs are never written to (autolog computes the same value on the side)."""

    def __init__(self, penalised: list):
        super().__init__()
        self.penalised = penalised

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and "val_loss" in logs:
            logs[best_rule.DATA_LOSS] = float(logs["val_loss"]) - best_rule.weight_penalty(self.penalised)


def fit_tracked(model: keras.Model, splits: Splits, spec: TrialSpec, pruning=None) -> MlflowCallback:
    """model.fit on the splits with early stopping (if patience is set), a pruner's callback (`pruning`) and
    the MLflow callback last."""
    fit = spec.fit
    callbacks, monitor = [], fit.monitor
    if monitor == "val_loss" and (penalised := best_rule.penalised(model)):
        # an L1/L2 model: its epochs are chosen (and stopped) on the data loss, as its trials are ranked
        callbacks.append(DataLoss(penalised))
        monitor = best_rule.DATA_LOSS
    if pruning is not None:  # judged on the same value: val_data_loss equals val_loss where there is no penalty
        pruning.monitor = monitor
        callbacks.append(pruning)
    if fit.patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode="min", patience=fit.patience,  # config.MONITORS: losses
            min_delta=fit.min_delta, restore_best_weights=fit.restore_best_weights))
    # the last completed epoch's state, per run, so `mlflow-dl resume` continues a killed fit
    backup = runs.backup_dir(mlflow.active_run().info.run_id)
    tracker = MlflowCallback(monitor=monitor, restore_best_weights=fit.restore_best_weights,
                             log_weights="best" if fit.restore_best_weights else "last",
                             preprocessing=splits.preprocessing,
                             input_example=splits.raw_test.head(5 + splits.preprocessing.window),
                             backup_dir=backup, log_fit_params=False, log_datasets=False)  # run_trial logs the spec's
    # metrics logged before the state is saved; two states kept, so a SIGKILL in the middle of writing one
    # (a corrupt .weights.h5) falls back to the epoch before it
    callbacks += [tracker, keras.callbacks.BackupAndRestore(backup, double_checkpoint=True)]
    # y None: x yields (input, target) batches itself (a keras PyDataset of windows)
    train = (splits.x_train,) if splits.y_train is None else (splits.x_train, splits.y_train)
    val = splits.x_val if splits.y_val is None else (splits.x_val, splits.y_val)
    # in mlflow-dl's own processes (the CLI, its workers): what the process has loaded stays out of the full
    # collections Python would run during fit, and Keras' and TensorFlow's workarounds (tf_runtime); in a
    # user's process (the Python API) both do nothing
    try:
        with heap.frozen(), tf_runtime.own_fit():
            model.fit(*train, validation_data=val,
                      epochs=fit.epochs, batch_size=fit.batch_size, verbose=fit.verbose, callbacks=callbacks)
    finally:
        tracker.release()
    return tracker


def mlp_builder(spec: TrialSpec, splits: Splits) -> keras.Model:
    return build_mlp(spec.model, splits.x_train.shape[1], splits.preprocessing.task, splits.n_classes, spec.fit.lr)


def run_trial(ds: Dataset, splits: Splits, spec: TrialSpec, family: str, run_name: str | None = None,
              experiment: str | None = None, parent_run_id: str | None = None, extra_params: dict | None = None,
              raise_errors: bool = True, build_model=mlp_builder, after_fit=None, prune=None) -> TrialResult:
    """Fit one spec in its own run; the run ends FINISHED, or FAILED with the reason tagged.

    `build_model(spec, splits) -> compiled keras.Model` (default: the MLP of spec.model); `after_fit(model,
    splits) -> metrics` logs a family's extras inside the run. With raise_errors=False (sweeps) an Exception comes
    back as a FAILED result; Ctrl-C always propagates, after the run is marked KILLED. `prune`: the sweep's
    PruneSpec; a trial its pruner stops ends FINISHED, tagged with the epoch and the reason.
    """
    tf_runtime.apply_grappler_choice()
    # seeded, in a Keras session of its own; in a user's process the caller's streams and session come back after
    with trial_state.seeded(spec.fit.seed):
        run_id, tracker, pruning, metrics = None, None, None, {}
        try:
            with runs.tracked_run(family, run_name=run_name, experiment=experiment, parent_run_id=parent_run_id) as run:
                run_id = run.info.run_id
                model = build_model(spec, splits)
                params = {**spec.params(), **(extra_params or {})}
                mlflow.MlflowClient().log_batch(  # the spec and the comparability key in one call
                    run_id, params=[Param(k, str(v)) for k, v in params.items()],
                    tags=[RunTag(k, v) for k, v in comparability_tags(ds, splits, spec, model).items()])
                runs.log_dataset(dataset_input(ds))
                if prune is not None:
                    from mlflow_dl.training import prune_callback

                    pruning = prune_callback.start(prune, spec.fit.epochs)
                started = time.perf_counter()
                tracker = fit_tracked(model, splits, spec, pruning)
                fit_seconds = time.perf_counter() - started
                if pruning is not None and pruning.pruned_at is not None:
                    from mlflow_dl.tags import PRUNED_REASON_TAG, PRUNED_TAG

                    mlflow.set_tags({PRUNED_TAG: str(pruning.pruned_at), PRUNED_REASON_TAG: pruning.reason})
                if (diverged := tracker.divergence()) is not None:
                    raise TrainingError(f"{diverged}; "
                                        f"try a smaller lr (lr={spec.fit.lr}) or scale the target (--scale-y)")
                raw, test_loss = test_outputs(model, splits)
                summary = tracker.summary()  # logged by the callback already
                metrics = {**summary, **test_metrics(splits, raw, test_loss), "fit_seconds": fit_seconds,
                           "total_params": float(model.count_params())}
                metrics.update(after_fit(model, splits) if after_fit is not None else {})
                after = {k: v for k, v in metrics.items() if k not in summary}
                path, fig = test_plot(splits, raw)
                lost = False
                try:
                    mlflow.log_metrics(after)
                    mlflow.log_figure(fig, path)
                except Exception as exc:
                    if not uris.connection_lost(exc):
                        raise
                    lost = True  # the server went away during the fit: no use waiting for it below
                    tracker.journal_after_fit(after, fig, path)
                finally:
                    plots.close(fig)
                if not lost and not tracker.delivered() and uris.reachable(mlflow.get_tracking_uri()):
                    raise TrainingError("the tracking server stopped taking this run's metrics; they wait in the "
                                        "journal for `mlflow-dl sync`")
        except Exception as exc:
            if pruning is not None:
                prune_callback.finish(pruning, None, failed=True)
            if raise_errors or run_id is None:
                raise
            return TrialResult(run_id=run_id, status="FAILED", error=f"{type(exc).__name__}: {exc}",
                               metrics=tracker.summary() if tracker else {}, history=tracker.history if tracker else {})
    pruned_at = None
    if pruning is not None:
        prune_callback.finish(pruning, metrics.get("model_val_loss"))
        pruned_at = pruning.pruned_at
    return TrialResult(run_id=run_id, status="FINISHED", metrics=metrics, history=tracker.history,
                       pruned_at_epoch=pruned_at)
