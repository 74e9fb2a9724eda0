"""Experiment families: each a module with QUESTION, AXIS and `trials(base, **grid)`, the
protocol the sweep runner (sweeps/runner.py) takes."""

from __future__ import annotations

from importlib import import_module

from mlflow_dl.errors import ConfigError

SWEEPS = ("regularization", "dropout", "capacity", "early_stopping", "learning_rate", "data_size", "multi_input", "pca",
          "rnn_vs_lstm", "custom")


def get(name: str):
    """The family module called `name`; a ConfigError naming the known ones otherwise."""
    if name not in SWEEPS:
        raise ConfigError(f"family={name!r} is unknown; expected one of: {', '.join(SWEEPS)}")
    return import_module(f"mlflow_dl.families.{name}")


def sweep(family: str, **kwargs):
    """The sweep of the family called `family`, e.g. `sweep("dropout", rates="0,0.5")`;
    keyword arguments as `mlflow_dl.sweeps.runner.sweep`."""
    from mlflow_dl.sweeps.runner import sweep as run

    return run(get(family), **kwargs)
