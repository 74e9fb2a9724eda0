"""Frozen specs of one experiment, validated on creation.

Every check names the field, the value it got and what it accepts, so the CLI
can print the message as it is. Nothing here imports a heavy library.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from mlflow_dl.errors import ConfigError

BUNDLED_DATASETS = ("breast_cancer", "diabetes", "digits")
SCALERS = ("minmax", "standard")
TASKS = ("auto", "binary", "multiclass", "regression")
REG_LAYERS = ("all", "widest")
MONITORS = ("val_loss", "loss")


def _fail(name: str, value: Any, expected: str) -> None:
    raise ConfigError(f"{name}={value!r} is invalid; expected {expected}")


def parse_list(text: str | list | tuple, cast=float, name: str = "value") -> tuple:
    """'128,64,32' -> (128, 64, 32); lists pass through, each item cast."""
    items = text.split(",") if isinstance(text, str) else list(text)
    items = [i.strip() if isinstance(i, str) else i for i in items]
    items = [i for i in items if i != ""]
    try:
        return tuple(cast(i) for i in items)
    except (TypeError, ValueError):
        _fail(name, text, f"a comma-separated list of {cast.__name__} values")


def parse_grid(text, default: tuple, cast=float, name: str = "grid") -> tuple:
    """A sweep grid: None means the family's default; an empty list is an error."""
    if text is None:
        return tuple(default)
    values = parse_list(text, cast, name)
    if not values:
        _fail(name, text, f"a non-empty comma-separated list of {cast.__name__} values")
    return values


@dataclass(frozen=True)
class DataSpec:
    """Where the rows come from and how they are split and scaled."""

    dataset: str = "breast_cancer"
    target: str | None = None
    task: str = "auto"
    scaler: str = "minmax"
    scale_y: bool = False
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    dropna: bool = False
    seed: int = 42

    def __post_init__(self) -> None:
        if not self.dataset:
            _fail("dataset", self.dataset, f"a bundled name ({', '.join(BUNDLED_DATASETS)}) or a CSV path")
        if self.scaler not in SCALERS:
            _fail("scaler", self.scaler, " or ".join(SCALERS))
        if self.task not in TASKS:
            _fail("task", self.task, ", ".join(TASKS))
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 < value < 1:
                _fail(name, value, "a fraction in (0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            _fail("val_fraction + test_fraction", self.val_fraction + self.test_fraction, "a sum below 1")


@dataclass(frozen=True)
class ModelSpec:
    """A Sequential MLP: hidden sizes, regularisation and dropout."""

    hidden: tuple[int, ...] = (128, 64, 32)
    activation: str = "relu"
    l1: float = 0.0
    l2: float = 0.0
    reg_layers: str = "all"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        hidden = parse_list(self.hidden, int, "hidden")
        object.__setattr__(self, "hidden", hidden)
        if not hidden or any(n <= 0 for n in hidden):
            _fail("hidden", ",".join(map(str, hidden)), "one or more positive layer sizes such as '128,64,32'")
        for name in ("l1", "l2"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                _fail(name, value, "a strength >= 0")
        if not 0 <= self.dropout < 1:
            _fail("dropout", self.dropout, "a rate in [0, 1)")
        if self.reg_layers not in REG_LAYERS:
            _fail("reg_layers", self.reg_layers, " or ".join(REG_LAYERS))


@dataclass(frozen=True)
class FitSpec:
    """Optimiser, epochs and early stopping."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    patience: int | None = 10
    min_delta: float = 0.0
    monitor: str = "val_loss"
    restore_best_weights: bool = True
    seed: int = 42
    verbose: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            _fail("epochs", self.epochs, "an integer >= 1")
        if self.batch_size < 1:
            _fail("batch_size", self.batch_size, "an integer >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            _fail("lr", self.lr, "a learning rate > 0")
        if self.patience is not None and self.patience < 0:
            _fail("patience", self.patience, "an integer >= 0 (or none to turn early stopping off)")
        if not self.min_delta >= 0:
            _fail("min_delta", self.min_delta, "a value >= 0")
        if self.monitor not in MONITORS:
            _fail("monitor", self.monitor, " or ".join(MONITORS))


@dataclass(frozen=True)
class TrialSpec:
    """Everything one training run needs, flattened into MLflow params."""

    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    fit: FitSpec = field(default_factory=FitSpec)

    def params(self) -> dict[str, str]:
        """Flat `section.field` -> string, the keys every run of a family shares."""
        out: dict[str, str] = {}
        for section in fields(self):
            if getattr(self, section.name) is None:  # a user's own model (families.custom) has no ModelSpec
                continue
            for key, value in asdict(getattr(self, section.name)).items():
                if isinstance(value, (tuple, list)):
                    value = ",".join(map(str, value))
                out[f"{section.name}.{key}"] = "none" if value is None else str(value)
        return out
