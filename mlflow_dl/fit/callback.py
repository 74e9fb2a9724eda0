"""MlflowCallback: the one tracking path of every fit (train, sweeps, autolog).

This module holds the fit's life cycle: which run it logs to, what is queued per epoch, and how
the run ends (delivered, through the journal when the server is away, or KILLED on a signal).
The best epoch is fit/fit_epochs.py's, the files fit/fit_artifacts.py's, the signals
fit/interrupts.py's; records travel through delivery/logger.py's BackgroundLogger.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor

import keras
import mlflow
import pandas as pd

from mlflow_dl.data.preprocessing import Preprocessing
from mlflow_dl.delivery import runs, spool, uris
from mlflow_dl.delivery.logger import BackgroundLogger
from mlflow_dl.fit import best as best_rule
from mlflow_dl.fit import comparability, fit_artifacts, fit_datasets, fit_params, model_logging
from mlflow_dl.fit import fit_epochs
from mlflow_dl.fit.fit_epochs import FitEpochs
from mlflow_dl.fit.interrupts import SignalStop
from mlflow_dl.runtime import tf_runtime
from mlflow_dl.tags import KEY_TAG, MODEL_SKIPPED_TAG, NONFINITE_TAG

FLUSH_TIMEOUT = 5.0  # seconds without a record delivered before the end of fit stops waiting for the server
DELIVERY_TIMEOUT = 60.0  # the same, for an owner about to end the run (it needs the server anyway)
MODEL_VAL_LOSS_TAG = "mlflow_dl.model_val_loss_epoch"  # set when model_val_loss is not the model epoch's own
ACTIVITY_TAG = "mlflow_dl.model_val_loss_note"  # what model_val_loss holds for a model with activity regularisers


class MlflowCallback(keras.callbacks.Callback):
    """Log a Keras fit to MLflow.

    Per-epoch metrics keep Keras' names, step = epoch (0-based); a model with a weight penalty (L1/L2) also
    logs `val_data_loss` (val_loss without the penalty). At the end: `best_epoch`, `best_<monitor>` (its
    value there), `best_val_loss` (minimum over epochs), `best_epoch_loss` (train loss at the best epoch),
    `stopped_epoch`, `model_epoch`, `model_val_loss` (the epoch whose weights the logged model holds, and their
    validation data loss, without the penalty: what rankings use) and `model_val_penalty` (the penalty there).
    Artifacts: `checkpoints/best.keras` (the best epoch), `plots/learning_curves.png` and the model `model`
    (`runs:/RUN_ID/model`), a pyfunc carrying its preprocessing.

    It only observes: the model keeps the weights fit left it. `log_weights` "best" (default) or "last" says which
    epoch's weights the logged model holds; `restore_best_weights=True` also gives the model the best epoch's
    weights at the end of fit, as Keras' EarlyStopping(restore_best_weights=True) would.

    `mode` "min", "max" or "auto" (Keras' rule: accuracy, AUC, precision, recall... maximised) is the best epoch's
    direction; epochs without the monitor (validation_freq > 1) or with a non-finite value are no candidates, and
    only a fit where the monitor never shows falls back to the training loss.

    Uses the active run, or starts and ends one; a further fit in a run this process already logged gets a nested
    run (`fit 2`, ...), since MLflow refuses to change a param. `log_fit_params`: fit's arguments, optimizer, loss,
    metrics, callbacks' and layers' settings; `log_datasets`: the training and validation data as dataset inputs.
    Either tags the data's digests (`mlflow_dl.data_digest`, `mlflow_dl.validation_digest`, kept in
    `data_digests`). Both off where the caller logs its own (the families' runs).
    """

    def __init__(self, monitor: str | None = None, restore_best_weights: bool = False, log_model: bool = True,
                 preprocessing: Preprocessing | None = None, input_example: pd.DataFrame | None = None,
                 family: str = "autolog", backup_dir: str | None = None, mode: str = "auto",
                 log_fit_params: bool = True, log_datasets: bool = True, log_weights: str = "best"):
        """`backup_dir`: BackupAndRestore's folder for this run, tagged on it; when it exists (`mlflow-dl resume`), the
        steps the run holds are not logged again. `monitor` None: val_loss (val_data_loss with a weight penalty), or
        the monitor, mode, min_delta and baseline of the fit's EarlyStopping that restores its best weights, as Keras does."""
        super().__init__()
        self.backup_dir = backup_dir
        self.given = (monitor, mode, best_rule.check_log_weights(log_weights))  # what a user's EarlyStopping may override
        self.monitor = monitor or "val_loss"
        self.mode = best_rule.check_mode(mode)
        self.restore_best_weights = restore_best_weights
        self.log_weights = log_weights
        self.log_model = log_model
        self.preprocessing = preprocessing
        self.input_example = input_example
        self.family = family
        self.log_fit_params = log_fit_params
        self.log_datasets = log_datasets
        self.fit_arguments: dict | None = None  # fit's arguments by name, when the caller knows them (autolog)
        self.data_digests: dict[str, str] = {}  # {"training": ..., "validation": ...} of this fit's data
        self._datasets: Future | None = None  # the datasets being logged
        self.run_id: str | None = None
        self.model_info = self.client = None  # client: what this fit logs through, from on_train_begin
        self._logger: BackgroundLogger | None = None  # from on_train_begin
        self._signals = SignalStop()
        self.record: FitEpochs | None = None  # this fit's epochs and its best one, from on_train_begin

    # -- during training -------------------------------------------------
    def on_train_begin(self, logs=None):
        # nothing process-wide here (the garbage collector, Keras' and TensorFlow's globals): the process
        # may be a user's; mlflow-dl's own processes tune themselves around the fit (trial.fit_tracked)
        tf_runtime.trace_train_step_once(self.model)
        active = mlflow.active_run()
        nested = self._nested_run(active)
        if nested:
            active = None
        self.owns_run = active is None
        uri = mlflow.get_tracking_uri()
        create = None
        if active is None and uris.reachable(uri):
            active = runs.start_run(self.family, **nested)
        elif active is None:  # server down: the run is created when it is back, with this start time
            create = runs.offline_run(self.family)
        run_id = active.info.run_id if active is not None else None
        self.client = mlflow.MlflowClient()
        self._logger = BackgroundLogger(self.client, run_id, spool.Journal(uri, run_id), create)
        self.offline = run_id is None
        self.run_id = run_id or self._logger.journal.key
        arguments = None
        if self.log_fit_params or self.log_datasets or self.given[0] is None:
            arguments = self.fit_arguments or fit_params.arguments_in_fit(self.model)
            self.fit_arguments = None  # the data it holds is not kept past this fit
        self._early_stopping = self._follow_early_stopping(arguments)
        if self.log_fit_params or self.log_datasets:
            self._log_fit(active, arguments)
        self._logged_through = -1
        earlier: dict[int, dict[str, float]] = {}  # a resumed run's epochs from before the kill
        if self.backup_dir:
            if os.path.isdir(self.backup_dir) and not self.offline:
                earlier = fit_epochs.logged_epochs(self.client, run_id)
                self._logged_through = max(earlier, default=-1)
            self._logger.set_tags({runs.BACKUP_TAG: self.backup_dir})
        self.record = FitEpochs(self.model, self.monitor, self.mode, self.log_weights == "best", self.backup_dir,
                                earlier)
        self._penalised = None  # the variables with a weight penalty, once the model is built
        self._signals.install(self.model)
        # while the model trains: stage the servable model, log the architecture (without an Input: after fit)
        self._staged = None
        self._stage_pending = self.log_model and not self.offline
        if self._stage_pending and self.model.built and (skipped := self._stage()):
            self._logger.set_tags({MODEL_SKIPPED_TAG: skipped})
        self._architecture = None
        if self.model.built and not self.offline:
            self._architecture = fit_artifacts.in_background(self._log_architecture)
        self._epoch_time: dict[int, int] = {}
        self._logger.log_params(fit_params.version_params())
        self._log_size()

    def _log_size(self) -> None:
        """model.total_params, once the model is built (a subclassed model: at its first batch)."""
        self._size_logged = self.model.built
        if self._size_logged:
            self._logger.log_params({"model.total_params": self.model.count_params()})

    def _nested_run(self, active) -> dict:
        """runs.start_run's arguments for a nested run (`fit 2`, ...) when this is a user's further fit in the
        active run; {} otherwise (a family's run has one fit; `mlflow-dl resume` fits its run again on purpose)."""
        if active is None or not self.log_fit_params or (self.backup_dir and os.path.isdir(self.backup_dir)):
            return {}  # no fit of the user's own, or a killed fit resumed (BackupAndRestore): the same run
        count = fit_params.count_fit(active.info.run_id)
        if count == 1:
            return {}
        return {"run_name": f"fit {count}", "parent_run_id": active.info.run_id,
                "parent_experiment_id": active.info.experiment_id}

    def _follow_early_stopping(self, arguments: dict | None):
        """The fit's EarlyStopping that restores its best weights (None if none), whose monitor and mode this fit
        takes when none was given: Keras restores that epoch's weights, so it is the best one and the logged one."""
        monitor, mode, log_weights = self.given
        self.monitor, self.mode, self.log_weights = monitor or "val_loss", best_rule.check_mode(mode), log_weights
        if monitor is not None:
            return None
        callback = best_rule.restoring_early_stopping(fit_params.fit_callbacks(arguments))
        if callback is not None:
            self.monitor, self.mode, self.log_weights = callback.monitor, callback.mode, "best"
        return callback

    def _weigh_penalty(self) -> None:
        """Once the model is built: its penalised variables, and the data loss as the default rank (no monitor
        named, no restoring EarlyStopping); a model with activity regularisers tagged with what that holds."""
        self._penalised = best_rule.penalised(self.model)
        if self._penalised and self.given[0] is None and self._early_stopping is None:
            self.monitor = self.record.monitor = self.record.rank_metric = best_rule.DATA_LOSS
        if note := best_rule.activity_note(fit_params.leaf_layers(self.model)):
            self._logger.set_tags({ACTIVITY_TAG: note})

    def _log_fit(self, active, arguments: dict | None) -> None:
        """fit's params (fit_params); the data's digests as tags, and its datasets logged in the background."""
        try:
            if self.log_fit_params:
                self._logger.log_params(fit_params.fit_params(self.model, arguments, self.params or {}, MlflowCallback))
            self.data_digests = fit_datasets.digests(arguments) if arguments is not None else {}
        except Exception as exc:  # a model or data these cannot read: the fit goes on, tracked without them
            print(f"mlflow-dl: fit params not logged: {type(exc).__name__}: {exc}", file=sys.stderr)
        tags = {fit_datasets.DIGEST_TAG: self.data_digests.get("training"),
                fit_datasets.VALIDATION_DIGEST_TAG: self.data_digests.get("validation")}
        if self.log_datasets and tags[fit_datasets.DIGEST_TAG] and not self._keyed():  # key from the data
            tags.update(comparability.fit_tags(self.model, "fit", list(self.data_digests.values()),
                                               comparability.validation_rule(arguments)))
        if any(tags.values()):
            self._logger.set_tags({k: v for k, v in tags.items() if v is not None})
        if self.log_datasets and self.data_digests and not self.offline:
            self._datasets = fit_artifacts.in_background(fit_datasets.log_datasets, self.run_id, arguments,
                                                         self.data_digests, active.data.tags)

    def _keyed(self) -> bool:
        """Whether someone else's run already carries a comparability key (its owner's word wins over the data's)."""
        if self.offline or self.owns_run:
            return False
        return KEY_TAG in self.client.get_run(self.run_id).data.tags

    def on_epoch_begin(self, epoch, logs=None):
        self._signals.epoch_begin()

    def on_epoch_end(self, epoch, logs=None):
        if self._signals.received and self._signals.epoch_cut(self.params.get("steps")):
            self._end_interrupted()  # a cut epoch is not logged as a whole one, nor backed up after this
        values = {k: float(v) for k, v in (logs or {}).items()}
        if self._penalised is None:
            self._weigh_penalty()
        if self._penalised and "val_loss" in values:  # the weights are those validation ran with
            values[best_rule.DATA_LOSS] = values["val_loss"] - best_rule.weight_penalty(self._penalised)
        self.record.add(epoch, values)
        if not self._size_logged:
            self._log_size()
        if epoch > self._logged_through:  # a resumed fit recomputes at most the epoch it was killed in
            now = self._epoch_time[epoch] = int(time.time() * 1000)
            self._logger.log_metrics(values, step=epoch, tags={runs.HEARTBEAT_TAG: str(now)}, timestamp=now)
        if self.record.diverged_at is not None:
            self.model.stop_training = True

    # -- after training ---------------------------------------------------
    def summary(self) -> dict[str, float]:
        """The end-of-fit metrics (FitEpochs.summary); {} before fit."""
        return self.record.summary() if self.record else {}

    @property
    def history(self) -> dict[str, list[float]]:
        return self.record.history if self.record else {}

    def divergence(self) -> str | None:
        """How the training loss diverged ("loss became nan at epoch 3"), or None when it did not."""
        return self.record.divergence() if self.record else None

    def delivered(self, timeout: float = DELIVERY_TIMEOUT) -> bool:
        """Wait until every record of this fit is on the server (an owner that ends the run calls this first,
        so no run ends with metrics still queued); True at once when fit never began."""
        return self._logger is None or self._logger.flush(timeout=timeout)

    def journal_after_fit(self, metrics: dict[str, float], fig, artifact_file: str) -> None:
        """What the run's owner logs after fit (test metrics, a figure) when its calls found the server gone: through
        the fit's journal (or the run's again, if the fit's had all gone out), sent in order, or by `mlflow-dl sync`."""
        logger = self._logger
        if logger.journal.closed:
            logger = BackgroundLogger(self.client, self.run_id, spool.Journal(self.client.tracking_uri, self.run_id))
        logger.log_metrics(metrics, step=0)
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, os.path.basename(artifact_file))
            fig.savefig(local)
            logger.log_artifact(local, os.path.dirname(artifact_file) or None)
        if logger is not self._logger:
            logger.keep_journal(logger.flush(timeout=FLUSH_TIMEOUT))

    def release(self) -> None:
        """Give back what fit took: SIGTERM and Ctrl-C to their handlers. on_train_end does it; Keras skips
        that when fit raises, so whoever calls fit calls this too (in a finally)."""
        self._signals.restore()

    def _drop_staged_files(self) -> None:
        """A fit that ends without its model: the staged files go; the logged model stays PENDING."""
        if self._staged is not None and self._staged.done() and self._staged.exception() is None:
            self._staged.result().remove_files()

    def _end_interrupted(self) -> None:
        """What was logged delivered (or journaled), the run ended KILLED if this callback owns it, then the
        signal's KeyboardInterrupt: at the end of the cut epoch, so that BackupAndRestore does not save it as
        whole (Keras stops after the batch), or at the end of fit."""
        interrupt = KeyboardInterrupt(self._signals.received)
        logger = self._logger
        try:
            self._drop_staged_files()
            if self.owns_run and self.offline:
                logger.end("KILLED")
            delivered = logger.flush(timeout=FLUSH_TIMEOUT)
            if self.owns_run and not self.offline:
                if delivered:
                    runs.end_run(self.run_id, error=interrupt)
                else:  # the server went away: ended by `mlflow-dl sync`
                    logger.end("KILLED")
            logger.keep_journal(delivered)
        finally:
            self.release()
        raise interrupt

    def on_train_end(self, logs=None):
        self._signals.restore()
        try:
            if self._signals.received:
                self._end_interrupted()
            self._end_fit()
        finally:
            self.release()

    def _end_fit(self) -> None:
        """Summary, curves, checkpoint and the servable model; the run ended if this callback owns it. The
        summary goes out with the last epochs' batch, and the files are written while it travels; they are
        uploaded if the server took it and stays, else they go into the journal for `mlflow-dl sync`."""
        logger, record = self._logger, self.record
        if nonfinite := record.settle(self._early_stopping):
            logger.set_tags({NONFINITE_TAG: nonfinite[:500]})
        summary = record.summary()
        if summary:
            logger.log_metrics(summary, step=0)
        if (model := record.model_val_loss()) is not None and model[1] != record.model_epoch:
            logger.set_tags({MODEL_VAL_LOSS_TAG: f"{model[1]} (epoch {record.model_epoch} had no val_loss: "
                                                 "validation_freq)"})
        with ThreadPoolExecutor(2, thread_name_prefix="mlflow-dl-artifacts") as side, \
                tempfile.TemporaryDirectory() as tmp:
            online = side.submit(lambda: not self.offline and logger.flush(timeout=FLUSH_TIMEOUT))
            curves = (side.submit(fit_artifacts.render_curves, record.epochs, record.history, record.best_epoch, tmp)
                      if record.history else None)
            files = (fit_artifacts.save_checkpoint(self.model, record.best_weights, record.log_best,
                                                   self.restore_best_weights, bool(record.nonfinite), tmp)
                     if record.best_weights is not None else None)
            uploaded = False
            if online.result():
                try:
                    self._upload(side, curves and curves.result(), files)
                    uploaded = True
                except Exception as exc:  # the server took the last epochs, then went away: the rest as below
                    if not uris.connection_lost(exc):
                        raise
            if not uploaded:
                self._end_through_journal(curves and curves.result(), files and files[0])
                return
        if record.diverged_at is not None:
            self.client.set_tag(self.run_id, runs.ERROR_TAG, f"TrainingError: {record.divergence()}")
            if self.owns_run:
                runs.end_run(self.run_id, error=RuntimeError("training diverged"))
        elif self.owns_run:
            runs.end_run(self.run_id)
        logger.journal.close()

    def _upload(self, side: ThreadPoolExecutor, curves: str | None, files: tuple | None) -> None:
        """Curves, checkpoint, architecture, datasets and the servable model to the server, at once;
        every upload ended before this returns or raises."""
        jobs = [self._architecture or side.submit(self._log_architecture)]
        if self._datasets is not None:
            jobs.append(self._datasets)
        if curves is not None:
            jobs.append(side.submit(self.client.log_artifact, self.run_id, curves, "plots"))
        if files is not None:
            jobs.append(side.submit(self.client.log_artifact, self.run_id, files[0], "checkpoints"))
        model_file = files[1] if files is not None else None  # None: no finite weights to serve
        try:
            if model_file and self._stage_pending and (skipped := self._stage()):
                jobs.append(side.submit(self.client.set_tag, self.run_id, MODEL_SKIPPED_TAG, skipped))
            if self._staged is not None and model_file:
                self._log_pyfunc(model_file)
            elif self._staged is not None:
                jobs.append(side.submit(model_logging.discard, self._staged.result()))
        finally:
            futures.wait(jobs)
        for job in jobs:
            job.result()

    def _end_through_journal(self, curves: str | None, checkpoint: str | None) -> None:
        """The server is away: curves, checkpoint and the run's end go to the journal. The pyfunc model needs
        the server (it is logged with the run's model id): skipped, and tagged so; the checkpoint has its weights."""
        logger = self._logger
        self._drop_staged_files()
        if curves is not None:
            logger.log_artifact(curves, "plots")
        if checkpoint is not None:
            logger.log_artifact(checkpoint, "checkpoints")
            if self.log_model:
                logger.set_tags({MODEL_SKIPPED_TAG: "tracking server unreachable at the end of fit; "
                                                    "the weights are in checkpoints/best.keras"})
        if (diverged := self.divergence()) is not None:
            logger.set_tags({runs.ERROR_TAG: f"TrainingError: {diverged}"})
        if self.owns_run:
            logger.end("FAILED" if diverged is not None else "FINISHED")
        logger.keep_journal(logger.flush(timeout=FLUSH_TIMEOUT))

    def _log_architecture(self) -> None:
        fit_artifacts.log_architecture(self.client, self.run_id, self.model)

    def _stage(self) -> str | None:
        """Start staging the servable model; or say why there is none."""
        self._stage_pending = False
        staged = fit_artifacts.stage(self.run_id, self.model, self.preprocessing, self.input_example)
        if isinstance(staged, str):
            return staged
        self._staged = staged
        return None

    def _log_pyfunc(self, model_path: str) -> None:
        """The weights into the model staged at train begin, linked to the run at the logged epoch."""
        step = self.record.model_epoch
        logged_at = self._epoch_time.get(step)  # None: logged before a resume, by the killed process
        step_metrics = {k: (v, logged_at) for k, v in self.record.epochs[step].items()} if logged_at else None
        self.model_info = model_logging.finish_pipeline_model(self._staged.result(), model_path, step=step,
                                                              step_metrics=step_metrics)
