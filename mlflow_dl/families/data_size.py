"""Do more rows help? The learning curve by training-set size (more rows reduce variance)."""

from __future__ import annotations

from mlflow_dl.config import TrialSpec, parse_grid
from mlflow_dl.errors import ConfigError
from mlflow_dl.sweeps.trial_specs import Axis, Trial

QUESTION = "How does the train/validation gap change with more training rows?"
DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
AXIS = Axis(key="fraction", label="fraction of training rows")


def trials(base: TrialSpec, fractions=None) -> list[Trial]:
    grid = parse_grid(fractions, DEFAULT_FRACTIONS, float, "fractions")
    for f in grid:
        if not 0 < f <= 1:
            raise ConfigError(f"fractions={f!r} is invalid; expected fractions in (0, 1]")
    return [Trial(name=f"rows={f:g}", spec=base, values={"fraction": f}, train_fraction=f) for f in grid]
