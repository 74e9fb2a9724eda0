"""A fit's epochs and its best one, as MlflowCallback ranks them; plain state, no MLflow calls.

The best epoch follows the monitor's direction (fit/best.py) over finite values only; while
the monitor has not shown (validation_freq > 1, no validation data) the training loss stands in.
A model with a weight penalty (L1/L2) is ranked on its data loss (best.DATA_LOSS, val_loss without
the penalty) unless a monitor was named. A fit resumed by `mlflow-dl resume` takes the killed
process's epochs, and its best weights from the backup folder.
"""

from __future__ import annotations

import math
import os

import numpy as np

from mlflow_dl.fit import best as best_rule

BEST_STATE = "mlflow_dl_best.npz"  # in backup_dir: the best epoch's weights, for `mlflow-dl resume`


def logged_epochs(client, run_id: str) -> dict[int, dict[str, float]]:
    """A resumed run's per-epoch metrics as logged before the kill (the summary comes only at the end)."""
    out: dict[int, dict[str, float]] = {}
    for key in client.get_run(run_id).data.metrics:
        for m in client.get_metric_history(run_id, key):
            out.setdefault(m.step, {})[key] = m.value
    return out


class FitEpochs:
    """Every epoch's logs, the history by metric, the best epoch and its weights, and the summary."""

    def __init__(self, model, monitor: str, mode: str, log_best: bool, backup_dir: str | None = None,
                 earlier: dict[int, dict[str, float]] | None = None):
        """`log_best`: the logged model holds the best epoch's weights (else the last epoch's);
        `earlier`: a resumed run's epochs as logged before the kill."""
        self.model = model
        self.monitor, self.mode, self.log_best = monitor, mode, log_best
        self.backup_dir = backup_dir
        self._earlier = earlier or {}
        self.history: dict[str, list[float]] = {}
        self.epochs: dict[int, dict[str, float]] = {}  # epoch -> its logs (a resumed run's earlier ones too)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_weights = None
        self.rank_metric = monitor  # the value the best epoch was chosen by: the monitor, or "loss" as fallback
        self._way: str | None = None  # "min" / "max": the monitor's direction, once it has shown
        self._fallback: tuple | None = None  # (loss, epoch, weights) while the monitor has not shown yet
        self.nonfinite: str | None = None  # why the weights to log are not finite
        self.diverged_at: int | None = None
        self.first_epoch: int | None = None  # > 0 when fit resumes (initial_epoch, e.g. Hyperband)

    def add(self, epoch: int, values: dict[str, float]) -> None:
        """One epoch's logs; its weights are kept when it is the best so far."""
        if self.first_epoch is None:
            self.first_epoch = epoch
            self._take_earlier(epoch)
        self.epochs[epoch] = values
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)
        if not math.isfinite(values.get("loss", 0.0)):
            self.diverged_at = epoch
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
            self._fallback = (values["loss"], epoch, self.model.get_weights())

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

    def settle(self, early_stopping=None) -> str | None:
        """At the end of fit: the loss fallback when the monitor never showed, and why the weights
        the model will be logged with are not finite (None when they are). A user's restoring
        EarlyStopping decides the best epoch (its min_delta, baseline, start_from_epoch)."""
        stopping = early_stopping
        if stopping is not None and stopping.best_weights is not None and stopping.best_epoch in self.epochs:
            self.best_epoch, self.best_weights = stopping.best_epoch, stopping.best_weights
            self.best = self.epochs[stopping.best_epoch].get(self.monitor, math.nan)
            self.rank_metric = self.monitor
        if self.best_epoch is None and self._fallback is not None:
            self.best, self.best_epoch, self.best_weights = self._fallback
            self.rank_metric, self._way = "loss", "min"
        self._fallback = None
        if not self.epochs:
            return None
        epoch = self.model_epoch
        weights = self.best_weights if self.log_best else self.model.get_weights()
        if epoch is None or weights is None:
            self.nonfinite = f"no epoch with finite {self.rank_metric}: {self.divergence() or 'no weights to log'}"
        elif bad := best_rule.nonfinite(weights):
            self.nonfinite = (f"{bad} weight arrays of epoch {epoch} hold NaN or infinity"
                              + (f" ({self.divergence()})" if self.diverged_at is not None else ""))
        return self.nonfinite

    @property
    def model_epoch(self) -> int | None:
        """The epoch whose weights the logged model holds: the best one (log_best), else the last."""
        if self.log_best:
            return self.best_epoch
        return max(self.epochs) if self.epochs else None

    def model_val_loss(self) -> tuple[float, int, float] | None:
        """(data loss, its epoch, weight penalty there) of the logged weights: val_loss without the
        penalty (best.DATA_LOSS; val_loss itself for a model without one); when that epoch was not
        validated (validation_freq), the latest validated epoch before it."""
        epoch = self.model_epoch
        if epoch is None or self.nonfinite:
            return None
        for e in sorted((e for e in self.epochs if e <= epoch), reverse=True):
            logs = self.epochs[e]
            value = logs.get("val_loss", math.nan)
            if math.isfinite(value):
                data = logs.get(best_rule.DATA_LOSS, value)
                return data, e, value - data
        return None

    def divergence(self) -> str | None:
        """How the training loss diverged ("loss became nan at epoch 3"), or None when it did not."""
        if self.diverged_at is None:
            return None
        return f"loss became {self.history['loss'][-1]} at epoch {self.diverged_at}"

    def summary(self) -> dict[str, float]:
        """The end-of-fit metrics: best_epoch, best_<monitor>, best_val_loss, best_epoch_loss,
        stopped_epoch, model_epoch, model_val_loss (what rankings use) and model_val_penalty."""
        if not self.epochs:
            return {}
        out = {"stopped_epoch": max(self.epochs)}
        if self.best_epoch is not None:
            out["best_epoch"] = self.best_epoch
            out["best_epoch_loss"] = self.epochs[self.best_epoch].get("loss", math.nan)
            out[f"best_{self.rank_metric}"] = self.best
        finite = [v["val_loss"] for v in self.epochs.values() if math.isfinite(v.get("val_loss", math.nan))]
        if finite:
            out["best_val_loss"] = min(finite)
        if self.model_epoch is not None:
            out["model_epoch"] = self.model_epoch
        if (model := self.model_val_loss()) is not None:
            out["model_val_loss"], out["model_val_penalty"] = model[0], model[2]
        return out
