"""Let a search find it: the keras-tuner search spaces, taken from the lecture's ranges.

A user's YAML/JSON file overrides the defaults key by key and is checked before any run or tuner starts:
`{min, max[, step][, sampling: log]}` a range, a list a choice, one value a fixed value.
Nothing here imports keras-tuner: `declare` takes the tuner's `hp` object.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from typing import Any

from mlflow_dl.config import TrialSpec
from mlflow_dl.errors import ConfigError
from mlflow_dl.models.recurrent import CELLS as RECURRENT_CELLS

QUESTION = "Which network and learning rate does a keras-tuner search find?"
TUNERS = ("random", "grid", "bayesian", "hyperband")
MODELS = ("mlp", "recurrent")
SAMPLINGS = ("linear", "log", "reverse_log")
CELLS = tuple(RECURRENT_CELLS)  # rnn, lstm, gru: the recurrent builder's names


@dataclass(frozen=True)
class Param:
    """One searched value: an int/float range, a choice, or a fixed value."""

    kind: str  # int | float | choice | fixed
    min: float | None = None
    max: float | None = None
    step: float | None = None
    sampling: str = "linear"
    values: tuple = ()

    def describe(self) -> Any:
        """The JSON-able form a user's file would use (logged on the parent run)."""
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "choice":
            return list(self.values)
        out = {"min": self.min, "max": self.max}
        if self.step is not None:
            out["step"] = self.step
        if self.sampling != "linear":
            out["sampling"] = self.sampling
        return out


# name -> (default, value domain check, what the domain accepts)
_POSITIVE_INT = (lambda v: float(v).is_integer() and v >= 1, "integers >= 1")
_DOMAINS = {
    "layers": _POSITIVE_INT,
    "nodes": _POSITIVE_INT,
    "units": _POSITIVE_INT,
    "timesteps": _POSITIVE_INT,
    "lr": (lambda v: 0 < v < math.inf, "learning rates > 0"),
    "dropout": (lambda v: 0 <= v < 1, "rates in [0, 1)"),
    "l1": (lambda v: 0 <= v < math.inf, "strengths >= 0"),
    "l2": (lambda v: 0 <= v < math.inf, "strengths >= 0"),
    "cell": (lambda v: v in CELLS, " / ".join(CELLS)),
}

MLP_SPACE = {
    "layers": Param("int", 1, 4),
    "nodes": Param("int", 8, 256, step=8),
    "lr": Param("float", 1e-4, 1e-2, sampling="log"),
    "dropout": Param("float", 0.0, 0.5, step=0.1),
    "l1": Param("choice", values=(0.0, 1e-4, 1e-3, 1e-2)),
    "l2": Param("choice", values=(0.0, 1e-3, 1e-2, 1e-1)),
}
RECURRENT_SPACE = {
    "cell": Param("choice", values=CELLS),
    "units": Param("int", 16, 128, step=16),
    "timesteps": Param("int", 4, 32, step=4),
    "lr": Param("float", 1e-4, 1e-2, sampling="log"),
}
DEFAULT_SPACES = {"mlp": MLP_SPACE, "recurrent": RECURRENT_SPACE}


def _fail(name: str, value: Any, expected: str) -> None:
    raise ConfigError(f"space: {name}={value!r} is invalid; expected {expected}")


def _number(name: str, value: Any) -> float:
    try:
        number = float(value)  # YAML reads 1e-4 (no dot) as a string
    except (TypeError, ValueError):
        _fail(name, value, "a number")
    if not math.isfinite(number):
        _fail(name, value, "a finite number")
    return number


def _check_domain(name: str, values) -> None:
    ok, accepted = _DOMAINS[name]
    for v in values:
        if not ok(v):
            _fail(name, v, accepted)


def _parse(name: str, entry: Any, default: Param) -> Param:
    numeric = name != "cell"
    if isinstance(entry, list):
        if not entry:
            _fail(name, entry, "a non-empty list (an empty choice has nothing to search)")
        values = tuple(_number(name, v) for v in entry) if numeric else tuple(entry)
        if numeric and default.kind == "int":
            values = tuple(int(v) if float(v).is_integer() else v for v in values)
        _check_domain(name, values)
        return Param("choice", values=tuple(dict.fromkeys(values)))
    if isinstance(entry, dict):
        unknown = set(entry) - {"min", "max", "step", "sampling"}
        if unknown or not {"min", "max"} <= set(entry) or not numeric:
            _fail(name, entry, "a list of values, one value, or {min, max[, step][, sampling]}"
                  + ("" if numeric else f" (cell takes a list of {' / '.join(CELLS)})"))
        lo, hi = _number(f"{name}.min", entry["min"]), _number(f"{name}.max", entry["max"])
        if lo > hi:
            _fail(name, entry, f"min <= max (the range {lo:g}..{hi:g} is empty)")
        _check_domain(name, (lo, hi))
        step = None if entry.get("step") is None else _number(f"{name}.step", entry["step"])
        sampling = str(entry.get("sampling", "linear"))
        if sampling not in SAMPLINGS:
            _fail(f"{name}.sampling", sampling, " or ".join(SAMPLINGS))
        if sampling != "linear" and lo <= 0:
            _fail(f"{name}.min", lo, f"a value > 0 for {sampling} sampling")
        if step is not None and (step <= 0 or (sampling != "linear" and step <= 1)):
            _fail(f"{name}.step", step, "a step > 0 (a factor > 1 for log sampling)")
        kind = default.kind if default.kind in ("int", "float") else ("int" if _DOMAINS[name] is _POSITIVE_INT else "float")
        if kind == "int" and (not lo.is_integer() or not hi.is_integer() or (step is not None and not step.is_integer())):
            _fail(name, entry, "integer min, max and step")
        return Param(kind, lo, hi, step=step, sampling=sampling)
    if isinstance(entry, (int, float, str)) and not isinstance(entry, bool):
        value = _number(name, entry) if numeric else entry
        if numeric and default.kind == "int":
            value = int(value) if float(value).is_integer() else value
        _check_domain(name, (value,))
        return Param("fixed", values=(value,))
    _fail(name, entry, "a list of values, one value, or {min, max[, step][, sampling]}")


def load_space(model: str = "mlp", path: str | None = None) -> dict[str, Param]:
    """The default space of `model`, overridden key by key by the YAML/JSON file at `path`."""
    if model not in MODELS:
        raise ConfigError(f"model={model!r} is invalid; expected one of: {', '.join(MODELS)}")
    space = dict(DEFAULT_SPACES[model])
    if not path:
        return space
    if not os.path.isfile(path):
        raise ConfigError(f"space={path!r}: no such file; expected a YAML or JSON search-space file")
    import yaml  # JSON is YAML too

    with open(path) as f:
        try:
            entries = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ConfigError(f"space={path!r} is not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"space={path!r} must map hyper-parameter names to ranges; "
                          f"expected keys among: {', '.join(space)}")
    for name, entry in entries.items():
        if name not in space:
            raise ConfigError(f"space: unknown key {name!r} in {path}; the {model} space has: {', '.join(space)}")
        space[name] = _parse(name, entry, space[name])
    return space


def check_tuner(tuner: str, space: dict[str, Param]) -> None:
    """Grid search enumerates values, so every range must be countable (a step or a choice)."""
    if tuner not in TUNERS:
        raise ConfigError(f"tuner={tuner!r} is invalid; expected one of: {', '.join(TUNERS)}")
    if tuner == "grid":
        for name, p in space.items():
            if p.kind == "float" and p.step is None and name != "lr":
                _fail(name, p.describe(), "a step or a list of values for tuner=grid")


def declare(hp, space: dict[str, Param]) -> dict[str, Any]:
    """Register every Param on the keras-tuner `hp`; returns this trial's values by name."""
    out = {}
    for name, p in space.items():
        if p.kind == "fixed":
            out[name] = hp.Fixed(name, p.values[0])
        elif p.kind == "choice":
            out[name] = hp.Choice(name, list(p.values))
        elif p.kind == "int":
            out[name] = hp.Int(name, int(p.min), int(p.max), step=int(p.step) if p.step else None, sampling=p.sampling)
        else:
            out[name] = hp.Float(name, p.min, p.max, step=p.step, sampling=p.sampling)
    return out


def mlp_spec(base: TrialSpec, values: dict[str, Any]) -> TrialSpec:
    """The TrialSpec of one MLP trial: `layers` hidden layers of `nodes`, its lr, dropout, L1/L2."""
    model = replace(base.model, hidden=(int(values["nodes"]),) * int(values["layers"]),
                    dropout=float(values["dropout"]), l1=float(values["l1"]), l2=float(values["l2"]))
    return replace(base, model=model, fit=replace(base.fit, lr=float(values["lr"])))


def recurrent_spec(base: TrialSpec, values: dict[str, Any]) -> TrialSpec:
    """The TrialSpec of one recurrent trial: a one-layer `cell` of `units`, windows of `timesteps` rows, its lr.

    `base.data` is a time-series spec (mlflow_dl.data.series.SeriesSpec)."""
    from mlflow_dl.models.recurrent import RecurrentSpec

    model = RecurrentSpec(cell=str(values["cell"]), units=(int(values["units"]),))
    return replace(base, data=replace(base.data, timesteps=int(values["timesteps"])), model=model,
                   fit=replace(base.fit, lr=float(values["lr"])))


SPECS = {"mlp": mlp_spec, "recurrent": recurrent_spec}


def longest(space: dict[str, Param]) -> int:
    """The longest window the recurrent space can ask for (the series split must leave room for it)."""
    p = space["timesteps"]
    return int(max(p.values) if p.kind in ("choice", "fixed") else p.max)


def space_json(space: dict[str, Param]) -> str:
    return json.dumps({name: p.describe() for name, p in space.items()}, sort_keys=True)
