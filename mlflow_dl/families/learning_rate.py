"""Which step size? Adam learning rates on a log grid."""

from __future__ import annotations

from dataclasses import replace

from mlflow_dl.config import TrialSpec, parse_grid
from mlflow_dl.sweeps.trial_specs import Axis, Trial

QUESTION = "Which learning rate trains fastest without diverging?"
DEFAULT_LRS = (0.1, 0.01, 0.001, 0.0001)
AXIS = Axis(key="lr", label="learning rate", log=True)


def trials(base: TrialSpec, lrs=None) -> list[Trial]:
    grid = parse_grid(lrs, DEFAULT_LRS, float, "lrs")
    return [Trial(name=f"lr={lr:g}", spec=replace(base, fit=replace(base.fit, lr=lr)), values={"lr": lr}) for lr in grid]
