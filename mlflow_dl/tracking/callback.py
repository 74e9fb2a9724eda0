"""MlflowCallback: the one tracking path of every fit (train, sweeps, autolog).

Per epoch it only queues metrics (sent by a background thread) and, when the
monitored value improves, copies the weights in memory. While the model trains,
background threads stage the servable pyfunc model (everything but the
weights) and log the architecture (summary and diagram). Files that depend on the
weights are written once, after training: the best checkpoint, the learning
curves and the model's Keras file.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import metadata

import keras
import mlflow
import numpy as np
import pandas as pd

from mlflow_dl.runtime import tf_runtime
from mlflow_dl.data.preprocessing import Preprocessing
from mlflow_dl.tracking import best as best_rule
from mlflow_dl.tracking import comparability
from mlflow_dl.tracking import fit_datasets, fit_params, model_logging, plots, runs, spool, tensor_inputs
from mlflow_dl.tracking.logger import BackgroundLogger

FLUSH_TIMEOUT = 5.0  # seconds without a record delivered before the end of fit stops waiting for the server
DELIVERY_TIMEOUT = 60.0  # the same, for an owner about to end the run (it needs the server anyway)
MODEL_SKIPPED_TAG = "mlflow_dl.model_skipped"  # why a run has no servable model
NONFINITE_TAG = "mlflow_dl.nonfinite_weights"  # why the logged weights are no candidate (NaN / infinity)
MODEL_VAL_LOSS_TAG = "mlflow_dl.model_val_loss_epoch"  # set when model_val_loss is not the model epoch's own
BEST_STATE = "mlflow_dl_best.npz"  # in backup_dir: the best epoch's weights, for `mlflow-dl resume`
SOURCE_TAGS = ("mlflow.source.name", "mlflow.source.type", "mlflow.user")  # a dataset's source: the run's code

_SAID_NO_GRAPHVIZ = False  # the missing-diagram note is printed once per process
INSTALL_GRAPHVIZ = ("Graphviz's `dot` is not installed; install it (apt-get install graphviz, brew install graphviz "
                    "or conda install graphviz) and later runs draw it")


def _in_background(fn, *args) -> Future:
    """fn(*args) on a daemon thread, which never holds up the interpreter's exit; the Future has its outcome."""
    future: Future = Future()

    def run():
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever asks for the result
            future.set_exception(exc)

    threading.Thread(target=run, name="mlflow-dl-prepare", daemon=True).start()
    return future


def _validation_rule(arguments: dict | None) -> str:
    """How a user's fit chose its validation rows, for the comparability key."""
    arguments = arguments or {}
    if arguments.get("validation_data") is not None:
        return "validation_data"
    return f"validation_split={arguments.get('validation_split') or 0.0:g}"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


class MlflowCallback(keras.callbacks.Callback):
    """Log a Keras fit to MLflow.

    Per-epoch metrics keep Keras' names with step = epoch (0-based). At the end:
    `best_epoch`, `best_<monitor>` (its value there), `best_val_loss` (the minimum
    over epochs), `best_epoch_loss` (train loss at the best epoch), `stopped_epoch`,
    `model_epoch` and `model_val_loss` (the epoch whose weights the logged model holds,
    and their validation loss: what rankings use); `checkpoints/best.keras`;
    `plots/learning_curves.png`; and the model as a pyfunc carrying its
    preprocessing. With `restore_best_weights` (the default) the model ends fit
    holding the best epoch's weights, so what is logged is what was best.

    The best epoch follows the monitor's direction: `mode` "min", "max", or "auto"
    (Keras' rule: accuracy, AUC, precision, recall... maximised). Epochs without the
    monitor (validation_freq > 1) are not candidates; only a fit where it never shows
    falls back to the training loss. Epochs with a non-finite value never are.

    Uses the active run, or starts one (and ends it) when none is active; the
    pyfunc model is that run's logged model `model` (`runs:/RUN_ID/model`). A further fit in a run
    this process already logged a fit into gets a nested run of its own (`fit 2`, ...): MLflow
    refuses to change a param, and each fit keeps its own metrics and model.

    `log_fit_params`: fit's arguments, the optimizer, loss, metrics, the callbacks' and layers'
    settings (tracking/fit_params.py); `log_datasets`: the training and validation data as dataset
    inputs (tracking/fit_datasets.py). With either on, the data's digests are tagged
    (`mlflow_dl.data_digest`, `mlflow_dl.validation_digest`) and kept in `data_digests`. Both off
    where the caller logs its own (the families' runs).
    """

    def __init__(self, monitor: str | None = None, restore_best_weights: bool = True, log_model: bool = True,
                 preprocessing: Preprocessing | None = None, input_example: pd.DataFrame | None = None,
                 family: str = "autolog", backup_dir: str | None = None, mode: str = "auto",
                 log_fit_params: bool = True, log_datasets: bool = True):
        """`backup_dir`: where BackupAndRestore keeps this run's last epoch; tagged on the run, and when
        it already exists (`mlflow-dl resume`) the steps the run holds are not logged again.

        `monitor` None: val_loss, unless the fit has an EarlyStopping that restores its best weights;
        then its best epoch is the fit's (its monitor, mode, min_delta, baseline), as Keras restores it."""
        super().__init__()
        self.backup_dir = backup_dir
        self.given = (monitor, mode, restore_best_weights)  # what fit may override with a user's EarlyStopping
        self.monitor = monitor or "val_loss"
        self.mode = best_rule.check_mode(mode)
        self.restore_best_weights = restore_best_weights
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
        self.model_info = None
        self._logger: BackgroundLogger | None = None  # from on_train_begin
        self._old_handlers: dict = {}  # signal -> the handler it had before fit
        self._interrupted: str | None = None  # the signal's name once SIGTERM / Ctrl-C came during fit
        self._steps_before = 0  # the optimizer's steps when the epoch began: was the epoch cut by the signal?

    # -- during training -------------------------------------------------
    def on_train_begin(self, logs=None):
        # nothing process-wide here (the garbage collector, Keras' and TensorFlow's globals): the process
        # may be a user's; mlflow-dl's own processes tune themselves around the fit (trial.fit_tracked)
        tf_runtime.trace_train_step_once(self.model)
        self._interrupted = None
        active = mlflow.active_run()
        nested = self._nested_run(active)
        if nested:
            active = None
        self._owns_run = active is None
        uri = mlflow.get_tracking_uri()
        create = None
        if active is None and runs.reachable(uri):
            active = runs.start_run(self.family, **nested)
        elif active is None:  # server down: the run is created when it is back, with this start time
            create = runs.offline_run(self.family)
        run_id = active.info.run_id if active is not None else None
        self._client = mlflow.MlflowClient()
        self._logger = BackgroundLogger(self._client, run_id, spool.Journal(uri, run_id), create)
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
        self._earlier: dict[int, dict[str, float]] = {}  # a resumed run's epochs from before the kill
        if self.backup_dir:
            if os.path.isdir(self.backup_dir) and not self.offline:
                self._earlier = self._earlier_epochs(run_id)
                self._logged_through = max(self._earlier, default=-1)
            self._logger.set_tags({runs.BACKUP_TAG: self.backup_dir})
        self._handle_signals()
        # while the model trains: stage the servable model, log the architecture (both known once the
        # model is built; a model without an Input: at the end of fit)
        self._staged = None
        self._stage_pending = self.log_model and not self.offline
        if self._stage_pending and self.model.built and (skipped := self._stage()):
            self._logger.set_tags({MODEL_SKIPPED_TAG: skipped})
        self._architecture = None
        if self.model.built and not self.offline:
            self._architecture = _in_background(self._log_architecture)
        self._epoch_time: dict[int, int] = {}
        self.history: dict[str, list[float]] = {}
        self.epochs: dict[int, dict[str, float]] = {}  # epoch -> its logs (a resumed run's earlier ones too)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_weights = None
        self._way: str | None = None  # "min" / "max": the monitor's direction, once it has shown
        self._fallback: tuple | None = None  # (loss, epoch, weights) while the monitor has not shown yet
        self.nonfinite: str | None = None  # why the logged weights are not finite
        self.diverged_at: int | None = None
        self.first_epoch: int | None = None  # > 0 when fit resumes (initial_epoch, e.g. Hyperband)
        self._monitor = self.monitor
        self._logger.log_params({
            "keras_version": keras.__version__,
            "tensorflow_version": _version("tensorflow"),
            "mlflow_dl_version": _version("mlflow-dl"),
            "tensorflow_grappler": tf_runtime.grappler_state(),
        })
        self._log_size()

    def _log_size(self) -> None:
        """model.total_params, once the model is built (a subclassed model: at its first batch)."""
        self._size_logged = self.model.built
        if self._size_logged:
            self._logger.log_params({"model.total_params": self.model.count_params()})

    def _nested_run(self, active) -> dict:
        """runs.start_run's arguments for a nested run when this is a further fit in the active run
        (`fit 2`, ...); {} otherwise. Only for a user's fits: a family's run has one fit, and
        `mlflow-dl resume` fits its run again on purpose."""
        if active is None or not self.log_fit_params or (self.backup_dir and os.path.isdir(self.backup_dir)):
            return {}  # no fit of the user's own, or a killed fit resumed (BackupAndRestore): the same run
        count = fit_params.count_fit(active.info.run_id)
        if count == 1:
            return {}
        return {"run_name": f"fit {count}", "parent_run_id": active.info.run_id,
                "parent_experiment_id": active.info.experiment_id}

    def _follow_early_stopping(self, arguments: dict | None):
        """The fit's EarlyStopping that restores its best weights, whose monitor and mode this fit then
        takes (when none was given): Keras hands the model that epoch's weights at the end of fit, so
        that epoch is the best one and the one logged. None otherwise."""
        monitor, mode, restore = self.given
        self.monitor, self.mode, self.restore_best_weights = monitor or "val_loss", best_rule.check_mode(mode), restore
        if monitor is not None:
            return None
        for callback in fit_params.fit_callbacks(arguments):
            if isinstance(callback, keras.callbacks.EarlyStopping) and callback.restore_best_weights:
                self.monitor, self.mode, self.restore_best_weights = callback.monitor, callback.mode, True
                return callback
        return None

    def _log_fit(self, active, arguments: dict | None) -> None:
        """fit's params (fit_params); the data's digests as tags, and its datasets logged in the background."""
        try:
            if self.log_fit_params:
                self._logger.log_params(fit_params.fit_params(self.model, arguments, self.params or {}))
            self.data_digests = fit_datasets.digests(arguments) if arguments is not None else {}
        except Exception as exc:  # a model or data these cannot read: the fit goes on, tracked without them
            print(f"mlflow-dl: fit params not logged: {type(exc).__name__}: {exc}", file=sys.stderr)
        tags = {fit_datasets.DIGEST_TAG: self.data_digests.get("training"),
                fit_datasets.VALIDATION_DIGEST_TAG: self.data_digests.get("validation")}
        if self.log_datasets and tags[fit_datasets.DIGEST_TAG] and not self._keyed():  # key from the data
            tags.update(comparability.fit_tags(self.model, "fit", list(self.data_digests.values()),
                                               _validation_rule(arguments)))
        if any(tags.values()):
            self._logger.set_tags({k: v for k, v in tags.items() if v is not None})
        if self.log_datasets and self.data_digests and not self.offline:
            source = {k: v for k, v in active.data.tags.items() if k in SOURCE_TAGS}
            self._datasets = _in_background(self._log_datasets, arguments, source)

    def _keyed(self) -> bool:
        """Whether the run already carries a comparability key (its owner's word wins over the data's);
        a run this callback just started carries none, so only someone else's run is asked."""
        if self.offline or self._owns_run:
            return False
        return comparability.KEY_TAG in self._client.get_run(self.run_id).data.tags

    def _log_datasets(self, arguments: dict, source: dict) -> None:
        """Training and validation data as the run's dataset inputs; a failure is one line, never the fit's."""
        try:
            for dataset, context in fit_datasets.datasets(arguments, self.data_digests, source):
                runs.log_dataset(dataset, context, run_id=self.run_id)
        except Exception as exc:  # an input mlflow.data cannot describe: the digests are tagged anyway
            print(f"mlflow-dl: datasets not logged: {type(exc).__name__}: {exc}", file=sys.stderr)

    def on_epoch_begin(self, epoch, logs=None):
        self._steps_before = self._steps_taken()

    def _steps_taken(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _epoch_cut(self) -> bool:
        """Whether the signal stopped the epoch before its last batch (it may also have come after it,
        during validation or the epoch's callbacks: then the epoch is whole, logged and backed up as such,
        and on_train_end ends the run)."""
        steps = self.params.get("steps")
        return not steps or self._steps_taken() - self._steps_before < steps

    def on_epoch_end(self, epoch, logs=None):
        if self._interrupted and self._epoch_cut():  # not logged as a whole epoch, nor backed up after this
            self._end_interrupted()
        values = {k: float(v) for k, v in (logs or {}).items()}
        if self.first_epoch is None:
            self.first_epoch = epoch
            self._take_earlier(epoch)
        self.epochs[epoch] = values
        if not self._size_logged:
            self._log_size()
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)
        if epoch > self._logged_through:  # a resumed fit recomputes at most the epoch it was killed in
            now = self._epoch_time[epoch] = int(time.time() * 1000)
            self._logger.log_metrics(values, step=epoch, tags={runs.HEARTBEAT_TAG: str(now)}, timestamp=now)
        if not math.isfinite(values.get("loss", 0.0)):
            self.diverged_at = epoch
            self.model.stop_training = True
            return
        if self.monitor in values:
            if self._way is None:  # Keras' metrics know their direction once fit has built them
                self._way = best_rule.direction(self.model, self.monitor, self.mode)
                self._fallback = None
            if best_rule.better(values[self.monitor], self.best, self._way):
                self.best, self.best_epoch = values[self.monitor], epoch
                self.best_weights = self.model.get_weights()
                self._keep_for_resume()
        elif self._way is None and best_rule.better(values.get("loss", math.nan),
                                                    self._fallback and self._fallback[0], "min"):
            # no monitor yet (validation_freq > 1, or no validation data): the training loss, until it shows
            self._fallback = (values["loss"], epoch, self.model.get_weights())

    def _earlier_epochs(self, run_id: str) -> dict[int, dict[str, float]]:
        """A resumed run's per-epoch metrics as logged before the kill (the summary comes only at the end)."""
        out: dict[int, dict[str, float]] = {}
        for key in self._client.get_run(run_id).data.metrics:
            for m in self._client.get_metric_history(run_id, key):
                out.setdefault(m.step, {})[key] = m.value
        return out

    def _take_earlier(self, first: int) -> None:
        """On resume: the epochs before `first` join the history, and their best (weights kept in
        backup_dir by the killed process) stays the best unless a resumed epoch beats it."""
        earlier = {e: v for e, v in sorted(self._earlier.items()) if e < first}
        for values in earlier.values():
            for key, value in values.items():
                self.history.setdefault(key, []).append(value)
        self.epochs.update(earlier)
        if earlier:
            self.first_epoch = min(earlier)
        path = os.path.join(self.backup_dir or "", BEST_STATE)
        if not earlier or not os.path.isfile(path):
            return
        with np.load(path) as state:
            epoch = int(state["epoch"])
            if epoch < first and str(state["monitor"]) == self.monitor:
                self.best, self.best_epoch, self._way = float(state["value"]), epoch, str(state["way"])
                self.best_weights = [state[f"arr_{i}"] for i in range(int(state["count"]))]

    def _keep_for_resume(self) -> None:
        """The best weights beside BackupAndRestore's last epoch, so a resumed fit still knows them."""
        if not self.backup_dir:
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        tmp = os.path.join(self.backup_dir, "mlflow_dl_best.tmp.npz")
        np.savez(tmp, *self.best_weights, count=len(self.best_weights), epoch=self.best_epoch, value=self.best,
                 way=self._way, monitor=self.monitor)
        os.replace(tmp, os.path.join(self.backup_dir, BEST_STATE))

    def _settle(self) -> None:
        """At the end of fit: the loss fallback when the monitor never showed, and whether the
        weights the model will be logged with are finite (a run without is no candidate). A user's
        restoring EarlyStopping decides the best epoch (its min_delta, baseline, start_from_epoch)."""
        stopping = self._early_stopping
        if stopping is not None and stopping.best_weights is not None and stopping.best_epoch in self.epochs:
            self.best_epoch, self.best_weights = stopping.best_epoch, stopping.best_weights
            self.best = self.epochs[stopping.best_epoch].get(self.monitor, math.nan)
            self._monitor = self.monitor
        if self.best_epoch is None and self._fallback is not None:
            self.best, self.best_epoch, self.best_weights = self._fallback
            self._monitor, self._way = "loss", "min"
        self._fallback = None
        if not self.epochs:
            return
        epoch = self.model_epoch
        weights = self.best_weights if self.restore_best_weights else self.model.get_weights()
        if epoch is None or weights is None:
            self.nonfinite = f"no epoch with finite {self._monitor}: {self.divergence() or 'no weights to log'}"
        elif bad := best_rule.nonfinite(weights):
            self.nonfinite = (f"{bad} weight arrays of epoch {epoch} hold NaN or infinity"
                              + (f" ({self.divergence()})" if self.diverged_at is not None else ""))
        if self.nonfinite:
            self._logger.set_tags({NONFINITE_TAG: self.nonfinite[:500]})

    @property
    def model_epoch(self) -> int | None:
        """The epoch whose weights the logged model holds: the best one when restored, else the last."""
        if self.restore_best_weights:
            return self.best_epoch
        return max(self.epochs) if self.epochs else None

    def _model_val_loss(self) -> tuple[float, int] | None:
        """(val_loss, its epoch) of the logged weights; when that epoch was not validated
        (validation_freq), the latest validated epoch before it."""
        epoch = self.model_epoch
        if epoch is None or self.nonfinite:
            return None
        for e in sorted((e for e in self.epochs if e <= epoch), reverse=True):
            value = self.epochs[e].get("val_loss", math.nan)
            if math.isfinite(value):
                return value, e
        return None

    # -- after training ---------------------------------------------------
    def summary(self) -> dict[str, float]:
        if not self.epochs:
            return {}
        out = {"stopped_epoch": max(self.epochs)}
        if self.best_epoch is not None:
            out["best_epoch"] = self.best_epoch
            out["best_epoch_loss"] = self.epochs[self.best_epoch].get("loss", math.nan)
            out[f"best_{self._monitor}"] = self.best
        finite = [v["val_loss"] for v in self.epochs.values() if math.isfinite(v.get("val_loss", math.nan))]
        if finite:
            out["best_val_loss"] = min(finite)
        if self.model_epoch is not None:
            out["model_epoch"] = self.model_epoch
        if (model := self._model_val_loss()) is not None:
            out["model_val_loss"] = model[0]
        return out

    def delivered(self, timeout: float = DELIVERY_TIMEOUT) -> bool:
        """Wait until every record of this fit is on the server: an owner that ends the run
        itself calls this first, so no run ends while its metrics are still queued.
        True at once when fit never began (nothing was queued)."""
        return self._logger is None or self._logger.flush(timeout=timeout)

    def journal_after_fit(self, metrics: dict[str, float], fig, artifact_file: str) -> None:
        """What the run's owner logs after fit (test metrics, a figure), through this fit's journal:
        for an owner whose own calls found the server gone. Sent in order, or by `mlflow-dl sync`."""
        self._logger.log_metrics(metrics, step=0)
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, os.path.basename(artifact_file))
            fig.savefig(local)
            self._logger.log_artifact(local, os.path.dirname(artifact_file) or None)

    def _handle_signals(self) -> None:
        """SIGTERM / Ctrl-C during fit stop it after the running batch, then end the run KILLED
        (_end_interrupted); the handler that was there before is chained (_on_signal)."""
        self._old_handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                if signal.getsignal(sig) is not signal.SIG_IGN:  # ignored (nohup, a background job) stays ignored
                    self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def release(self) -> None:
        """Give back what fit took: SIGTERM and Ctrl-C to the handlers they had.

        on_train_end does it; Keras skips on_train_end when fit raises, so whoever calls fit
        calls this too (in a finally), or a later Ctrl-C would reach this finished callback.
        """
        self._restore_signals()

    def _restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}

    def _drop_staged_files(self) -> None:
        """A fit that ends without its model: the staged files go; the logged model stays PENDING."""
        if self._staged is not None and self._staged.done() and self._staged.exception() is None:
            self._staged.result().remove_files()

    def _on_signal(self, signum, frame):
        """Note the signal, ask Keras to stop at the end of the running batch, then chain to the handler
        that was there before fit.

        The handler runs between any two bytecodes of the main thread: inside the journal's lock,
        inside TensorFlow tracing the train step. Flushing or raising there can deadlock, or have
        the interrupt turned into another error; _end_interrupted does both where it is safe. A second
        signal goes to the handler fit found, for a fit that never reaches the end of its batch.

        Chaining: a handler of the application's own (a cluster's preemption handler) is called now,
        with the same arguments, as it would have been without tracking; what it raises propagates.
        Python's default Ctrl-C handler (raise KeyboardInterrupt) and the default action (SIG_DFL:
        terminate) are not called: the KeyboardInterrupt _end_interrupted raises at the end of the
        batch, once the run is ended KILLED, stands for both.
        """
        previous = self._old_handlers.get(signum)
        self._restore_signals()
        self._interrupted = signal.Signals(signum).name
        self.model.stop_training = True
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)

    def _end_interrupted(self) -> None:
        """Everything logged so far delivered (or kept in the journal), the run ended KILLED if it
        is this callback's, then the KeyboardInterrupt the signal stood for. At the end of the cut
        epoch (Keras stops after the batch), so that callbacks after this one (BackupAndRestore)
        do not save it as whole, or at the end of fit. A run someone else owns (run_trial,
        autolog) is ended KILLED by its owner."""
        interrupt = KeyboardInterrupt(self._interrupted)
        logger = self._logger
        try:
            self._drop_staged_files()
            if self._owns_run and self.offline:
                logger.end("KILLED")
            delivered = logger.flush(timeout=FLUSH_TIMEOUT)
            if self._owns_run and not self.offline:
                if delivered:
                    runs.end_run(self.run_id, error=interrupt)
                else:  # the server went away: ended by `mlflow-dl sync`
                    logger.end("KILLED")
            if delivered:
                logger.journal.close()
            else:
                logger.journal.flush()
        finally:
            self.release()
        raise interrupt

    def on_train_end(self, logs=None):
        self._restore_signals()
        try:
            if self._interrupted:
                self._end_interrupted()
            self._end_fit()
        finally:
            self.release()

    def _end_fit(self) -> None:
        """Summary, curves, checkpoint and the servable model; the run ended if this callback owns it.

        The summary goes out with the last epochs' batch, and the files are written while that
        batch travels; whether the server took it decides where they go: uploaded (the model
        finished in the meantime), or into the journal for `mlflow-dl sync` when the server is away.
        """
        logger = self._logger
        self._settle()
        summary = self.summary()
        if summary:
            logger.log_metrics(summary, step=0)
        if (model := self._model_val_loss()) is not None and model[1] != self.model_epoch:
            logger.set_tags({MODEL_VAL_LOSS_TAG: f"{model[1]} (epoch {self.model_epoch} had no val_loss: "
                                                 "validation_freq)"})
        with ThreadPoolExecutor(2, thread_name_prefix="mlflow-dl-artifacts") as side, \
                tempfile.TemporaryDirectory() as tmp:
            online = side.submit(lambda: not self.offline and logger.flush(timeout=FLUSH_TIMEOUT))
            curves = side.submit(self._render_curves, tmp) if self.history else None
            files = self._save_checkpoint(tmp) if self.best_weights is not None else None
            if not online.result():
                self._end_through_journal(curves and curves.result(), files and files[0])
                return
            jobs = [self._architecture or side.submit(self._log_architecture)]
            if self._datasets is not None:
                jobs.append(self._datasets)
            if curves is not None:
                jobs.append(side.submit(self._client.log_artifact, self.run_id, curves.result(), "plots"))
            if files is not None:
                jobs.append(side.submit(self._client.log_artifact, self.run_id, files[0], "checkpoints"))
            model_file = files[1] if files is not None else None  # None: no finite weights to serve
            if model_file and self._stage_pending and (skipped := self._stage()):
                jobs.append(side.submit(self._client.set_tag, self.run_id, MODEL_SKIPPED_TAG, skipped))
            if self._staged is not None and model_file:
                self._log_pyfunc(model_file)
            elif self._staged is not None:
                jobs.append(side.submit(model_logging.discard, self._staged.result()))
            for job in jobs:
                job.result()
        if self.diverged_at is not None:
            self._client.set_tag(self.run_id, runs.ERROR_TAG, f"TrainingError: {self.divergence()}")
            if self._owns_run:
                runs.end_run(self.run_id, error=RuntimeError("training diverged"))
        elif self._owns_run:
            runs.end_run(self.run_id)
        logger.journal.close()

    def divergence(self) -> str | None:
        """How the training loss diverged ("loss became nan at epoch 3"), or None when it did not."""
        if self.diverged_at is None:
            return None
        return f"loss became {self.history['loss'][-1]} at epoch {self.diverged_at}"

    def _end_through_journal(self, curves: str | None, checkpoint: str | None) -> None:
        """The server is away: curves, checkpoint and the run's end go to the journal.

        The pyfunc model needs the server (it is logged with the run's model id), so it is
        skipped, with a tag saying so; the checkpoint holds the same weights.
        """
        logger = self._logger
        self._drop_staged_files()
        if curves is not None:
            logger.log_artifact(curves, "plots")
        if checkpoint is not None:
            logger.log_artifact(checkpoint, "checkpoints")
            if self.log_model:
                logger.set_tags({MODEL_SKIPPED_TAG: "tracking server unreachable at the end of fit; "
                                                    "the weights are in checkpoints/best.keras"})
        if self.diverged_at is not None:
            logger.set_tags({runs.ERROR_TAG: f"TrainingError: {self.divergence()}"})
        if self._owns_run:
            logger.end("FAILED" if self.diverged_at is not None else "FINISHED")
        if logger.flush(timeout=FLUSH_TIMEOUT):
            logger.journal.close()
        else:
            logger.journal.flush()

    def _render_curves(self, tmp: str) -> str:
        path = os.path.join(tmp, "learning_curves.png")
        epochs = range(min(self.epochs), max(self.epochs) + 1)
        aligned = {key: [self.epochs.get(e, {}).get(key, math.nan) for e in epochs] for key in self.history}
        fig = plots.learning_curves(aligned, self.best_epoch)
        fig.savefig(path)
        plots.close(fig)
        return path

    def _log_architecture(self) -> None:
        """model.summary() as model_summary.txt; the graph as plots/model.png where pydot and graphviz are."""
        global _SAID_NO_GRAPHVIZ
        lines: list[str] = []
        self.model.summary(line_length=120, print_fn=lambda text, *_, **__: lines.append(text))
        self._client.log_text(self.run_id, "\n".join(lines), "model_summary.txt")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.png")
            try:
                keras.utils.plot_model(self.model, to_file=path, show_shapes=True, show_layer_names=True, dpi=72)
            except Exception as exc:  # pydot or graphviz's `dot` missing or broken: the diagram is a nicety
                if not _SAID_NO_GRAPHVIZ:
                    import shutil

                    reason = INSTALL_GRAPHVIZ if shutil.which("dot") is None else exc
                    print(f"mlflow-dl: no model diagram (plots/model.png): {reason}", file=sys.stderr)
                    _SAID_NO_GRAPHVIZ = True
                return
            self._client.log_artifact(self.run_id, path, "plots")

    def _save_checkpoint(self, tmp: str) -> tuple[str, str | None]:
        """Write best.keras; return it and the file the logged model uses (the final weights
        when restore_best_weights is off; None when those are not finite). The model keeps the
        weights fit ended with, or the best epoch's when restore_best_weights is on (a fit that
        diverged included: its best finite epoch)."""
        final = None if self.restore_best_weights else self.model.get_weights()
        self.model.set_weights(self.best_weights)
        best_path = os.path.join(tmp, "best.keras")
        self.model.save(best_path)
        if final is None:
            return best_path, None if self.nonfinite else best_path
        if self.nonfinite:
            self.model.set_weights(final)
            return best_path, None
        self.model.set_weights(final)
        final_path = os.path.join(tmp, "final.keras")
        self.model.save(final_path)
        return best_path, final_path

    def _stage(self) -> str | None:
        """Start staging the servable model; or say why there is none."""
        self._stage_pending = False
        serving = self._serving()
        if serving is None:
            return ("the model's inputs cannot be told (a subclassed model whose call takes several arrays); "
                    "MlflowCallback(preprocessing=...) says what it takes; the weights are in checkpoints/best.keras")
        stage, args = serving
        self._staged = _in_background(stage, self.run_id, *args, model_logging.custom_objects(self.model))
        return None

    def _serving(self):
        """How the served model is staged, and from what: (stage function, its arguments after the run
        id). Rows of columns (the preprocessing given, or one 2-D input): the raw-row pyfunc, with an
        input example and the signature of the model's output on it. Anything else (several inputs,
        sequences, images): named tensors (tensor_inputs). None when the inputs cannot be told."""
        prep, example = self.preprocessing, self.input_example
        if prep is None:
            inputs = tensor_inputs.model_inputs(self.model)
            if inputs is None:
                return None
            if not tensor_inputs.is_table(inputs):
                x = tensor_inputs.example(inputs)
                names = getattr(self.model, "output_names", None)
                signature = tensor_inputs.signature(inputs, self._output_like(x), names)
                return model_logging.stage_tensor_model, (signature, x, tensor_inputs.keyed(self.model))
            n = int(inputs[0].shape[-1])
            prep = Preprocessing(columns=tuple(f"f{i}" for i in range(n)), x_scale=(1.0,) * n,
                                 x_offset=(0.0,) * n, task="raw", target="output")
        if example is None:
            example = pd.DataFrame(np.zeros((1, len(prep.columns))), columns=list(prep.columns))
        example = example.head(5 + prep.window)  # a time-series model needs `window` rows per prediction
        output = prep.outputs(self._output_like(prep.transform(example)))
        return model_logging.stage_pipeline_model, (prep, example, model_logging.output_signature(example, output))

    def _output_like(self, x):
        """Zeros shaped and typed like the model's output on `x`: the signature needs the output's
        columns and types, not its values, and a model's first eager call costs tens of milliseconds at the start
        of fit. A model without one static output (subclassed, several outputs) is called directly
        (predict_on_batch would trace a function for five rows)."""
        try:
            (out,) = self.model.outputs
            shape = tuple(out.shape[1:])
        except (AttributeError, ValueError, TypeError):  # no static outputs, or several
            shape = (None,)
        if None in shape:
            return keras.tree.map_structure(keras.ops.convert_to_numpy, self.model(x, training=False))
        rows = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
        return np.zeros((rows, *shape), dtype=out.dtype)

    def _log_pyfunc(self, model_path: str) -> None:
        """The weights into the model staged at train begin, linked to the run at the logged epoch."""
        step = self.model_epoch
        logged_at = self._epoch_time.get(step)  # None: logged before a resume, by the killed process
        step_metrics = {k: (v, logged_at) for k, v in self.epochs[step].items()} if logged_at else None
        self.model_info = model_logging.finish_pipeline_model(self._staged.result(), model_path, step=step,
                                                              step_metrics=step_metrics)
