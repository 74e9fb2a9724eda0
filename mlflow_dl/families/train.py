"""The `train` family: one experiment, fully tracked."""

from __future__ import annotations

from mlflow_dl.config import TrialSpec
from mlflow_dl.data.datasets import load_dataset
from mlflow_dl.data.split import split_and_scale


def run_name(spec: TrialSpec, dataset_name: str) -> str:
    return f"{dataset_name}-{'x'.join(map(str, spec.model.hidden))}"


def train(spec: TrialSpec | None = None, experiment: str | None = None, name: str | None = None):
    """Load, split and scale the data, then fit `spec` in one MLflow run.

    Bad input raises before any run starts; a failure after it ends the run
    FAILED with the reason in the tag `mlflow_dl.error`. Returns a TrialResult.
    """
    spec = spec or TrialSpec()
    ds = load_dataset(spec.data.dataset, spec.data.target, spec.data.task, spec.data.dropna)
    splits = split_and_scale(ds, spec.data)
    from mlflow_dl.training.trial import run_trial  # tensorflow: only once the data is known to be usable

    return run_trial(ds, splits, spec, family="train", run_name=name or run_name(spec, ds.name), experiment=experiment)
