"""The experiment a run goes in: created once (in MLflow 3's training view), looked up once per process."""

from __future__ import annotations

import functools
import os

import mlflow

DEFAULT_EXPERIMENT = "mlflow-dl"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure(name: str | None = None) -> str:
    """Get or create an experiment; one mlflow-dl creates opens in MLflow 3's training view."""
    name = name or DEFAULT_EXPERIMENT
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        from mlflow_dl.delivery.offline_store import artifact_location

        try:
            return client.create_experiment(name, artifact_location=artifact_location(name), tags=EXPERIMENT_KIND)
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return client.get_experiment_by_name(name).experiment_id  # another process created it meanwhile
    return experiment.experiment_id


def from_environment() -> bool:
    """Whether `mlflow run` or the user named the experiment (or the run) through the environment."""
    return any(os.environ.get(v) for v in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"))


@functools.lru_cache(maxsize=64)
def of_run(run_id: str) -> str:
    """A run's experiment (runs never move): a sweep's children ask once per process, not once each."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        return active.info.experiment_id
    return mlflow.MlflowClient().get_run(run_id).info.experiment_id
