"""How much dropout? One rate after each hidden layer."""

from __future__ import annotations

from dataclasses import replace

from mlflow_dl.config import TrialSpec, parse_grid
from mlflow_dl.sweeps.trial_specs import Axis, Trial

QUESTION = "How much dropout after each hidden layer?"
DEFAULT_RATES = (0.0, 0.2, 0.3, 0.4, 0.5)
AXIS = Axis(key="dropout", label="dropout rate")


def trials(base: TrialSpec, rates=None) -> list[Trial]:
    grid = parse_grid(rates, DEFAULT_RATES, float, "rates")
    return [Trial(name=f"dropout={r:g}", spec=replace(base, model=replace(base.model, dropout=r)), values={"dropout": r})
            for r in grid]
