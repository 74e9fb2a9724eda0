"""The Keras side of pruning: report val_loss to the sweep's Optuna trial each epoch, stop when it says so.

Optuna's own KerasPruningCallback moved out of its core (optuna-integration); this is the few lines
it took. The decision is the pruner's (`trial.should_prune()`); this callback only asks and stops
the fit, so the epochs trained, the best checkpoint and the model are logged as for any fit.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from mlflow_dl.training.pruning import PruneSpec, load_study


class OptunaPruning(keras.callbacks.Callback):
    """Report `monitor` (val_loss) at each epoch's end to an Optuna trial; stop when it is pruned."""

    def __init__(self, study, trial, monitor: str = "val_loss", rule: str = ""):
        super().__init__()
        self.study, self.trial, self.monitor, self.rule = study, trial, monitor, rule
        self.pruned_at: int | None = None
        self.reason: str | None = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:  # not validated this epoch (validation_freq)
            return
        value = float(value)
        self.trial.report(value, step=epoch)
        last = epoch + 1 >= (self.params or {}).get("epochs", math.inf)  # trained in full: nothing left to save
        if not last and self.trial.should_prune():
            self.pruned_at = epoch
            self.reason = self._reason(epoch, value)
            self.model.stop_training = True

    def _reason(self, epoch: int, value: float) -> str:
        """One line saying what the curve fell behind (read back from the study, for the tag only)."""
        from optuna.trial import TrialState

        # the trials the rule compares with: the finished ones (median), or every one at the rung (halving)
        states = ((TrialState.COMPLETE,) if "Median" in self.rule
                  else (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED))
        others = [t.intermediate_values[epoch] for t in self.study.get_trials(deepcopy=False, states=states)
                  if t.number != self.trial.number and epoch in t.intermediate_values]
        finite = [v for v in others if math.isfinite(v)]
        kind = "finished" if "Median" in self.rule else "other"
        median = f"; median of {len(finite)} {kind} trials there {np.median(finite):.4g}" if finite else ""
        return f"{self.monitor}={value:.4g} at epoch {epoch} fell behind{median} ({self.rule})"[:500]


def start(spec: PruneSpec, epochs: int, monitor: str = "val_loss") -> OptunaPruning:
    """A new trial of the sweep's study (in this process), as a Keras callback."""
    study = load_study(spec, epochs)
    return OptunaPruning(study, study.ask(), monitor=monitor, rule=spec.describe(epochs))


def finish(callback: OptunaPruning, value: float | None, failed: bool = False) -> None:
    """Tell the study how the trial ended: pruned, complete with `value` (model_val_loss), or failed."""
    from optuna.trial import TrialState

    if failed or (callback.pruned_at is None and (value is None or not math.isfinite(value))):
        callback.study.tell(callback.trial, state=TrialState.FAIL)
    elif callback.pruned_at is not None:
        callback.study.tell(callback.trial, state=TrialState.PRUNED)
    else:
        callback.study.tell(callback.trial, value)
