"""How strong should L1/L2 be? A log grid of strengths, on every hidden layer or the widest only."""

from __future__ import annotations

from dataclasses import replace

from mlflow_dl.config import TrialSpec, parse_grid
from mlflow_dl.errors import ConfigError
from mlflow_dl.sweeps.trial_specs import Axis, Trial

QUESTION = "How strong should L1/L2 regularisation be?"
DEFAULT_L1 = (1e-4, 1e-3, 1e-2, 1e-1)
DEFAULT_L2 = (1e-3, 1e-2, 1e-1, 5e-1)
AXIS = Axis(key="strength", label="regularisation strength", log=True, knee="increasing")


def trials(base: TrialSpec, kind: str = "l1", strengths=None, layers: str = "all") -> list[Trial]:
    if kind not in ("l1", "l2", "both"):
        raise ConfigError(f"kind={kind!r} is invalid; expected l1, l2 or both")
    kinds = ("l1", "l2") if kind == "both" else (kind,)
    out = []
    for k in kinds:
        grid = parse_grid(strengths, DEFAULT_L1 if k == "l1" else DEFAULT_L2, float, "strengths")
        for s in grid:
            model = replace(base.model, l1=s if k == "l1" else 0.0, l2=s if k == "l2" else 0.0, reg_layers=layers)
            out.append(Trial(name=f"{k}={s:g}", spec=replace(base, model=model), values={"kind": k, "strength": s}))
    return out
