"""How big a network? Hidden layers x nodes; the elbow shows where more capacity stops paying."""

from __future__ import annotations

from dataclasses import replace

from mlflow_dl.config import TrialSpec, parse_grid
from mlflow_dl.sweeps.trial_specs import Axis, Trial

QUESTION = "How many hidden layers and nodes does the task need?"
DEFAULT_LAYERS = (1, 2, 3, 4)
DEFAULT_NODES = (8, 32, 128, 256)
AXIS = Axis(key="total_params", label="trainable parameters", log=True, knee="decreasing")


def trials(base: TrialSpec, layers=None, nodes=None) -> list[Trial]:
    out = []
    for n_layers in parse_grid(layers, DEFAULT_LAYERS, int, "layers"):
        for n_nodes in parse_grid(nodes, DEFAULT_NODES, int, "nodes"):
            model = replace(base.model, hidden=(n_nodes,) * n_layers)
            out.append(Trial(name=f"{n_layers}x{n_nodes}", spec=replace(base, model=model),
                             values={"layers": n_layers, "nodes": n_nodes}))
    return out
