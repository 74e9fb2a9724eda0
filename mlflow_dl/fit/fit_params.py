"""The params a user's own `model.fit` logs: its arguments, optimizer, loss, metrics, callbacks' and layers' settings.

Plain functions with no MLflow calls (MlflowCallback logs what `fit_params` returns). Keys follow stock
`mlflow.keras.autolog()` where it has one, so a run holds at least what stock logs; the `model.*` summary keys
are the families' own, so a user's runs and the CLI's share columns in the MLflow UI.
"""

from __future__ import annotations

import inspect
import sys
from importlib import metadata

import numpy as np

from mlflow_dl.fit import fit_datasets

# fit's arguments that stock autolog logs (all but x, y, callbacks, validation_data, verbose)
FIT_ARGUMENTS = ("batch_size", "epochs", "validation_split", "shuffle", "class_weight", "sample_weight",
                 "initial_epoch", "steps_per_epoch", "validation_steps", "validation_batch_size", "validation_freq")
DEFAULT_BATCH_SIZE = 32  # what Keras uses for arrays when fit gets no batch_size
# MLflow's limits on a param (mlflow.utils.validation, 3.11 on): key and value length. Its limit of 100
# params per log_batch call is kept by MlflowClient.log_batch itself, which splits a larger call.
MAX_KEY, MAX_VALUE = 250, 6000
MAX_LAYERS = 100  # per-layer params for at most this many layers (the `model.*` summaries cover all)
# each callback's settings that decide training, read from its attributes
CALLBACK_SETTINGS = {  # class -> (key prefix, attributes)
    "EarlyStopping": ("early_stopping", ("monitor", "min_delta", "patience", "baseline", "restore_best_weights",
                                         "mode", "start_from_epoch")),
    "ModelCheckpoint": ("model_checkpoint", ("monitor", "mode", "save_best_only", "save_weights_only", "save_freq")),
    "ReduceLROnPlateau": ("reduce_lr_on_plateau", ("monitor", "factor", "patience", "min_lr", "min_delta",
                                                   "cooldown", "mode")),
}
# Keras adds these to every fit; they say nothing about this one
_KERAS_OWN_CALLBACKS = ("History", "ProgbarLogger")
REGULARIZERS = ("kernel_regularizer", "bias_regularizer", "recurrent_regularizer", "activity_regularizer")

_fits: dict[str, int] = {}  # run id -> fits this process logged into it


def version_params() -> dict[str, str]:
    """The versions a fit ran with, and whether TensorFlow's Grappler was on."""
    import keras

    from mlflow_dl.runtime import tf_runtime

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "none"

    return {"keras_version": keras.__version__, "tensorflow_version": version("tensorflow"),
            "mlflow_dl_version": version("mlflow-dl"), "tensorflow_grappler": tf_runtime.grappler_state()}


def count_fit(run_id: str) -> int:
    """How many fits this process has logged into run `run_id`, this one included (1 for the first)."""
    _fits[run_id] = _fits.get(run_id, 0) + 1
    return _fits[run_id]


def bind_fit(fit, model, args: tuple, kwargs: dict) -> dict | None:
    """fit's arguments by name, as the user called it, defaults filled in (what autolog saw)."""
    try:
        bound = inspect.signature(fit).bind(model, *args, **kwargs)
    except TypeError:  # fit itself says what is wrong with the call
        return None
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    arguments.pop(next(iter(arguments)))  # self
    return arguments


def arguments_in_fit(model) -> dict | None:
    """fit's arguments read from the running `model.fit` frame, for a MlflowCallback passed by hand.

    A callback sees only epochs and steps; the rest are fit's local variables (same names in every Keras 3
    backend). A private detail of Keras: with no such frame (a custom training loop, a future Keras) None, and
    the callback logs what `self.params` and the model tell.
    """
    wanted = (*FIT_ARGUMENTS, "x", "y", "callbacks", "validation_data")
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "fit":
            local = frame.f_locals
            if local.get("self") is model and all(name in local for name in wanted):
                return {name: local[name] for name in wanted}
        frame = frame.f_back
    return None


def number(value) -> str:
    """A float as people write it: float32 noise dropped (L1(0.01) holds 0.009999999776482582)."""
    return str(float(f"{float(value):.7g}"))


def _text(value) -> str:
    if isinstance(value, (bool, np.bool_)) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return number(value)
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # an array (sample_weight): its shape, not its values
        return f"{type(value).__name__}{tuple(value.shape)}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def argument_params(arguments: dict | None, keras_params: dict) -> dict[str, str]:
    """fit's arguments under stock's keys. `batch_size` is the one Keras used for arrays (32 when
    not given); `epochs` from Keras' own params when fit's arguments are not known."""
    if arguments is None:
        return {"epochs": _text(keras_params.get("epochs"))} if keras_params.get("epochs") is not None else {}
    out = {name: _text(arguments.get(name)) for name in FIT_ARGUMENTS}
    if arguments.get("batch_size") is None and fit_datasets.rows(arguments.get("x")) is not None:
        out["batch_size"] = str(DEFAULT_BATCH_SIZE)
    return out


def _name(obj) -> str:
    """A loss or metric as the user named it: "mse", "AUC", a function's name."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict) and "class_name" in obj:  # serialized (get_compile_config); a function: its name
        return str(obj.get("config")) if obj["class_name"] == "function" else obj["class_name"]
    if isinstance(obj, (list, tuple)):
        return ",".join(_name(o) for o in obj)
    if isinstance(obj, dict):
        return ",".join(f"{k}:{_name(v)}" for k, v in obj.items())
    return getattr(obj, "__name__", None) or type(obj).__name__


def compile_params(model) -> dict[str, str]:
    """The optimizer's whole config under stock's `optimizer_*` keys, plus `optimizer` (its class) and
    `learning_rate` (a number even under a schedule: its value now); the loss and the metrics."""
    import keras

    out: dict[str, str] = {}
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        out["optimizer"] = type(optimizer).__name__
        out["learning_rate"] = number(keras.ops.convert_to_numpy(optimizer.learning_rate))
        out.update({f"optimizer_{k}": _text(v) for k, v in optimizer.get_config().items()})
    try:
        config = model.get_compile_config() or {}
    except Exception:  # a loss or metric Keras cannot serialize: named from the model below
        config = {}
    for key in ("loss", "metrics", "loss_weights", "weighted_metrics"):
        if config.get(key) is not None:
            out[f"compile.{key}"] = _name(config[key])
    if "loss" not in config and getattr(model, "loss", None) is not None:
        out["compile.loss"] = _name(model.loss)
    return out


def fit_callbacks(arguments: dict | None) -> list:
    """The callbacks fit was given, from its arguments (a keras CallbackList, or the user's list)."""
    callbacks = (arguments or {}).get("callbacks")
    return list(getattr(callbacks, "callbacks", callbacks) or [])


def callback_params(callbacks, tracker: type) -> dict[str, str]:
    """`callbacks` (their classes, in order) and the training knobs of EarlyStopping, ModelCheckpoint
    and ReduceLROnPlateau: `early_stopping.patience`, ...; a second one of a kind: `early_stopping_2.*`.
    The `tracker` (MlflowCallback) and Keras' own callbacks are not the user's."""
    mine = [c for c in callbacks if not isinstance(c, tracker) and type(c).__name__ not in _KERAS_OWN_CALLBACKS]
    out = {"callbacks": ",".join(type(c).__name__ for c in mine) or "none"}
    seen: dict[str, int] = {}
    for callback in mine:
        kind = next((k for k in CALLBACK_SETTINGS if k in (b.__name__ for b in type(callback).__mro__)), None)
        if kind is None:
            continue
        seen[kind] = seen.get(kind, 0) + 1
        prefix, attributes = CALLBACK_SETTINGS[kind]
        prefix += f"_{seen[kind]}" if seen[kind] > 1 else ""
        settings = {a: getattr(callback, a) for a in attributes if hasattr(callback, a)}
        if isinstance(settings.get("min_delta"), (int, float)):  # Keras flips its sign once it knows the mode
            settings["min_delta"] = abs(settings["min_delta"])
        out.update({f"{prefix}.{a}": _text(v) for a, v in settings.items()})
    return out


def leaf_layers(model) -> list:
    """Every layer that is not itself a model, depth first (a Sequential inside a Functional model
    counts by its layers); the InputLayers left out."""
    import keras

    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(leaf_layers(layer))
        elif type(layer).__name__ != "InputLayer":
            out.append(layer)
    return out


def _activation(layer) -> str | None:
    fn = getattr(layer, "activation", None)
    return None if fn is None else getattr(fn, "__name__", type(fn).__name__)


def _regularizer(reg) -> dict[str, float]:
    """{"l1": 0.01} / {"l2": ...} / both; a custom regularizer: {} (its class is logged instead)."""
    try:
        config = reg.get_config()
    except (AttributeError, NotImplementedError):
        return {}
    return {k: float(config[k]) for k in ("l1", "l2") if isinstance(config.get(k), (int, float))}


def layer_settings(layer) -> dict[str, str]:
    """One layer's knobs: type, units / filters, activation, dropout rates, regularizer strengths,
    return_sequences."""
    out = {"type": type(layer).__name__}
    for attr in ("units", "filters"):
        if isinstance(getattr(layer, attr, None), (int, np.integer)):
            out[attr] = str(int(getattr(layer, attr)))
    if (activation := _activation(layer)) is not None:
        out["activation"] = activation
    for attr in ("rate", "dropout", "recurrent_dropout"):
        value = getattr(layer, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (attr == "rate" or value):
            out[attr] = number(value)
    if isinstance(getattr(layer, "return_sequences", None), bool):
        out["return_sequences"] = str(layer.return_sequences)
    for attr in REGULARIZERS:
        reg = getattr(layer, attr, None)
        if reg is None:
            continue
        strengths = _regularizer(reg)
        if not strengths:
            out[attr] = type(reg).__name__
        out.update({f"{attr}.{k}": number(v) for k, v in strengths.items()})
    return out


def layer_params(layers: list) -> dict[str, str]:
    """`layer.NN.<knob>` for each leaf layer (NN its 0-based place, two digits so the UI sorts them),
    for the first MAX_LAYERS layers."""
    width = max(2, len(str(min(len(layers), MAX_LAYERS) - 1)))
    return {f"layer.{i:0{width}d}.{k}": v for i, layer in enumerate(layers[:MAX_LAYERS])
            for k, v in layer_settings(layer).items()}


def _output_layers(model, layers: list) -> set[int]:
    """ids of the layers whose output is one of the model's outputs (the last layer when unknown)."""
    try:
        outputs = {id(t) for t in model.outputs}
        found = {id(layer) for layer in layers if id(getattr(layer, "output", None)) in outputs}
    except (AttributeError, ValueError, TypeError):  # not built as a graph (subclassed), or shared layers
        found = set()
    return found or {id(layers[-1])}


def _distinct(values) -> str:
    """Values in first-seen order, each once; "0.0" when there are none (as the families log no l1)."""
    seen: list[str] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return ",".join(seen) or "0.0"


def summary_params(model, layers: list) -> dict[str, str]:
    """Short params that line up across runs in the UI's table, under the families' keys:
    `model.hidden` (units of every layer with units but the output layers, "128,64,32"),
    `model.activation` (their activations), `model.dropout` (the Dropout rates and recurrent
    dropouts, "0.4"), `model.l1` / `model.l2` (the regularizer strengths, "0.01"); each value once,
    in layer order, "0.0" for none; `model.layers` (how many layers)."""
    if not layers:
        return {}
    outputs = _output_layers(model, layers)
    hidden = [layer for layer in layers if isinstance(getattr(layer, "units", None), (int, np.integer))
              and id(layer) not in outputs]
    settings = [layer_settings(layer) for layer in layers]
    return {
        "model.layers": str(len(layers)),
        "model.hidden": ",".join(str(int(layer.units)) for layer in hidden) or "none",
        "model.activation": _distinct(a for layer in hidden if (a := _activation(layer))) if hidden else "none",
        "model.dropout": _distinct(s[k] for s in settings for k in ("rate", "dropout", "recurrent_dropout")
                                   if k in s and float(s[k]) > 0),
        "model.l1": _distinct(v for s in settings for k, v in s.items() if k.endswith(".l1") and float(v) > 0),
        "model.l2": _distinct(v for s in settings for k, v in s.items() if k.endswith(".l2") and float(v) > 0),
    }


def fit_params(model, arguments: dict | None, keras_params: dict, tracker: type) -> dict[str, str]:
    """Everything above for one fit, within MLflow's limits. `arguments`: fit's (bind_fit or
    arguments_in_fit), or None when unknown; `keras_params`: the callback's `self.params`; `tracker`: the
    callback class that asks, left out of the `callbacks` param."""
    out = {**argument_params(arguments, keras_params), **compile_params(model)}
    if arguments is not None:
        out.update(callback_params(fit_callbacks(arguments), tracker))
    layers = leaf_layers(model)  # known before the model is built (a Sequential without an Input)
    out.update(layer_params(layers))
    out.update(summary_params(model, layers))
    return within_limits(out)


def within_limits(params: dict[str, str]) -> dict[str, str]:
    """Keys cut to MLflow's key length, values to its value length (the end replaced by "...")."""
    return {k[:MAX_KEY]: v if len(v) <= MAX_VALUE else v[:MAX_VALUE - 3] + "..." for k, v in params.items()}
