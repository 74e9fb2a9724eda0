"""Do separate input branches help? Named feature groups (Functional API) against one concatenated input.

For each branch width u: a multi-input child (one keras.Input per group, a
Dense(u) branch each, concatenate, the shared head of --hidden) and a
single-input Sequential baseline over the same columns whose first hidden layer
is sized so both have about the same number of weights.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from mlflow_dl.config import TrialSpec, parse_grid
from mlflow_dl.data.groups import group_splits, parse_groups, restrict
from mlflow_dl.errors import ConfigError
from mlflow_dl.sweeps.trial_specs import Axis, Trial

QUESTION = "Do separate input branches per feature group beat one concatenated input of the same size?"
DEFAULT_GROUPS = "auto"
DEFAULT_BRANCH_UNITS = (8, 32)
AXIS = Axis(key=None, label="model")


def _n_out(splits) -> int:
    from mlflow_dl.models.mlp import HEADS

    return HEADS[splits.preprocessing.task][0] or splits.n_classes


def grouped(groups: str, splits):
    """prepare() of a multi-input child: the splits as dicts of named inputs."""
    return group_splits(splits, parse_groups(groups, splits.preprocessing.columns))


def ungrouped(groups: str, splits):
    """prepare() of the baseline: the same columns, as one matrix."""
    return restrict(splits, parse_groups(groups, splits.preprocessing.columns))


def build_multi(branch_units: int, spec: TrialSpec, splits):
    from mlflow_dl.models.multi_input import build_multi_input

    sizes = {name: len(cols) for name, cols in splits.preprocessing.groups.items()}
    return build_multi_input(sizes, branch_units, spec.model, splits.preprocessing.task, splits.n_classes, spec.fit.lr)


def build_baseline(groups: str, branch_units: int, spec: TrialSpec, splits):
    """The Sequential MLP over all grouped columns, first layer as wide as matches the multi-input's weights."""
    from mlflow_dl.models.mlp import build_mlp
    from mlflow_dl.models.multi_input import dense_params, matching_width

    sizes = [len(c) for c in parse_groups(groups, splits.preprocessing.columns).values()]
    head, n_out = spec.model.hidden, _n_out(splits)
    branches = sum(n * branch_units + branch_units for n in sizes)
    target = branches + dense_params([len(sizes) * branch_units, *head, n_out])
    width = matching_width(sum(sizes), target, head, n_out)
    model = replace(spec.model, hidden=(width, *head))
    return build_mlp(model, sum(sizes), splits.preprocessing.task, splits.n_classes, spec.fit.lr)


def trials(base: TrialSpec, groups=None, branch_units=None) -> list[Trial]:
    groups = (groups or DEFAULT_GROUPS).strip()
    units = parse_grid(branch_units, DEFAULT_BRANCH_UNITS, int, "branch_units")
    if any(u < 1 for u in units):
        raise ConfigError(f"branch_units={branch_units!r} is invalid; expected positive unit counts such as 8,32")
    out = []
    for u in units:
        values = {"branch_units": u, "groups": groups}
        out.append(Trial(name=f"single-input u={u}", spec=base, values={**values, "inputs": 1},
                         prepare=partial(ungrouped, groups), build_model=partial(build_baseline, groups, u)))
        out.append(Trial(name=f"multi-input u={u}", spec=base, values={**values, "inputs": None},  # set by bind()
                         prepare=partial(grouped, groups), build_model=partial(build_multi, u)))
    return out


def bind(trials: list[Trial], ds, splits) -> list[Trial]:
    """Resolve the groups against the data's columns (errors before any run starts); fill in the input count."""
    n_inputs = len(parse_groups(trials[0].values["groups"], splits.preprocessing.columns))
    return [t if t.values["inputs"] is not None else replace(t, values={**t.values, "inputs": n_inputs})
            for t in trials]
