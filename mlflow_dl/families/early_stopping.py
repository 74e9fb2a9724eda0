"""When to stop? Patience x min_delta, with restore_best_weights on and off."""

from __future__ import annotations

from dataclasses import replace

from mlflow_dl.config import TrialSpec, parse_grid
from mlflow_dl.sweeps.trial_specs import Axis, Trial

QUESTION = "How patient should early stopping be, and should it restore the best weights?"
DEFAULT_PATIENCE = (0, 2, 5, 10)
DEFAULT_MIN_DELTA = (0.0, 0.001, 0.005)
AXIS = Axis(key=None, label="patience / min_delta / restore")


def trials(base: TrialSpec, patience=None, min_delta=None, restore="on,off") -> list[Trial]:
    restores = [r.strip() for r in str(restore).split(",") if r.strip()]
    out = []
    for p in parse_grid(patience, DEFAULT_PATIENCE, int, "patience"):
        for d in parse_grid(min_delta, DEFAULT_MIN_DELTA, float, "min_delta"):
            for r in restores:
                fit = replace(base.fit, patience=p, min_delta=d, restore_best_weights=r == "on")
                out.append(Trial(name=f"p={p},d={d:g},{'restore' if r == 'on' else 'last'}",
                                 spec=replace(base, fit=fit), values={"patience": p, "min_delta": d, "restore": r}))
    return out
