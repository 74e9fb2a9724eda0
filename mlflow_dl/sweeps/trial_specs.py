"""What a sweep is made of: trials, each a spec plus the values it varies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from mlflow_dl.config import TrialSpec


@dataclass(frozen=True)
class Trial:
    """One child run: its name says what differs (`l1=0.001`, `3x64`)."""

    name: str
    spec: TrialSpec
    values: dict = field(default_factory=dict)  # swept value(s) for the table and the plots
    train_fraction: float = 1.0
    # picklable callables (module-level functions or partials of them), for families whose trials differ
    # in more than the spec: prepare(splits) -> splits (PCA features, named input groups), and
    # build_model(spec, splits) -> compiled keras.Model (None: trial.mlp_builder)
    prepare: Callable | None = None
    build_model: Callable | None = None
    after_fit: Callable | None = None  # after_fit(model, splits) -> metrics, inside the child run (training.trial.run_trial)
    prune: object | None = None  # mlflow_dl.training.pruning.PruneSpec of the sweep's study, set by the runner with prune=True


@dataclass(frozen=True)
class Axis:
    """How a family's comparison plot reads: x is a swept value (or the trial names)."""

    key: str | None  # key in Trial.values used as x; None: one bar per trial
    label: str
    log: bool = False
    knee: str | None = None  # "increasing" / "decreasing": find the elbow of best_val_loss along x
