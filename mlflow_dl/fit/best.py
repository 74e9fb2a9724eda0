"""Which epoch is best: the monitor's direction (Keras' mode="auto" rule), finite weights, and the data loss.

Keras decides mode="auto" privately (`MonitorCallback._set_monitor_op`, `Metric._direction`), so this mirrors
it: `loss` is minimised, a metric's `_direction` is used when present, else names holding acc, auc, precision,
recall, f1, iou are maximised and everything else minimised (where Keras would refuse).
"""

from __future__ import annotations

import math

import numpy as np

from mlflow_dl.errors import ConfigError

MODES = ("auto", "min", "max")
MAXIMISED_WORDS = ("acc", "auc", "precision", "recall", "f1", "fbeta", "iou", "r2_score")
DATA_LOSS = "val_data_loss"  # val_loss without the weight penalties: logged per epoch when the model has one
LOG_WEIGHTS = ("best", "last")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r} is invalid; expected one of {', '.join(MODES)} "
                          "(auto: accuracy, AUC, precision, recall are maximised, other metrics minimised)")
    return mode


def check_log_weights(log_weights: str) -> str:
    if log_weights not in LOG_WEIGHTS:
        raise ConfigError(f"log_weights={log_weights!r} is invalid; expected best (the best epoch's weights) "
                          "or last (the weights fit ended with)")
    return log_weights


def penalised(model) -> list:
    """The trainable variables that carry a weight regulariser: Keras adds their penalties to every
    loss it reports, val_loss included (Layer._get_regularization_losses, Trainer.compute_loss)."""
    return [v for v in model.trainable_weights if getattr(v, "regularizer", None) is not None]


def weight_penalty(variables: list) -> float:
    """The weight penalty Keras adds to the loss, at the variables' current values; 0.0 for none.
    Fixed while Keras validates (the weights do not move), so val_loss - this is the data loss."""
    import keras

    return float(sum(float(keras.ops.convert_to_numpy(v.regularizer(v))) for v in variables))


def activity_regularised(layers: list) -> list[str]:
    """The names of layers with an activity regulariser: a penalty on the data, which no
    subtraction at the end of the epoch can recover."""
    return [layer.name for layer in layers if getattr(layer, "activity_regularizer", None) is not None]


def activity_note(layers: list) -> str | None:
    """What model_val_loss holds for a model with activity regularisers (tagged on its run), else None."""
    if not (active := activity_regularised(layers)):
        return None
    return (f"activity regularisers ({', '.join(active)[:200]}): model_val_loss includes their penalty on the "
            "validation rows; only the weight penalties are taken out")


def restoring_early_stopping(callbacks: list):
    """The first of `callbacks` that is an EarlyStopping restoring its best weights, else None."""
    import keras

    return next((c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping) and c.restore_best_weights),
                None)


def _compiled_metrics(model) -> list:
    """The model's metrics with Keras' compile-time containers (CompileMetrics) opened."""
    out = []
    for metric in getattr(model, "metrics", None) or []:
        inner = getattr(metric, "metrics", None)
        out.extend(inner if isinstance(inner, (list, tuple)) else [metric])
    return out


def direction(model, monitor: str, mode: str = "auto") -> str:
    """"max" or "min" for `monitor` on `model` (mode "auto" as Keras' EarlyStopping decides it)."""
    if mode != "auto":
        return mode
    name = monitor.removeprefix("val_")
    if name == "loss":
        return "min"
    for metric in _compiled_metrics(model):
        if getattr(metric, "name", None) == name:
            said = getattr(metric, "_direction", None)  # private in Keras 3: the name rule below is the fallback
            if said in ("up", "down"):
                return "max" if said == "up" else "min"
    return "max" if any(word in name.lower() for word in MAXIMISED_WORDS) else "min"


def better(value: float, best: float | None, way: str) -> bool:
    """A finite `value` that beats `best` (None: nothing yet) in direction `way`."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if way == "max" else value < best


def nonfinite(weights) -> int:
    """How many weight arrays hold NaN or infinity."""
    return sum(1 for w in weights if np.issubdtype(np.asarray(w).dtype, np.floating) and not np.isfinite(w).all())
