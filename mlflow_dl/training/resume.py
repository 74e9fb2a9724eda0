"""When the trainer goes away: `resume` a killed run from its last epoch, `reap` runs nobody ends.

A fit keeps its last epoch with Keras' BackupAndRestore in the folder tagged `mlflow_dl.backup_dir`; `resume`
refits in the same run from there, without logging its epochs again, and ends it FINISHED. `reap` ends KILLED
the RUNNING runs whose heartbeat tag (updated every epoch) is older than a limit.
"""

from __future__ import annotations

import dataclasses
import os
import time

from mlflow_dl.config import DataSpec, FitSpec, ModelSpec, TrialSpec
from mlflow_dl.errors import ConfigError

MLP_FAMILIES = ("train", "regularization", "dropout", "capacity", "early_stopping", "learning_rate", "data_size")


def _value(raw: str, default):
    if raw == "none":
        return None
    if isinstance(default, bool):
        return raw == "True"
    if isinstance(default, tuple):
        return tuple(int(v) for v in raw.split(",") if v)
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def spec_from_params(params: dict[str, str]) -> TrialSpec:
    """The TrialSpec a run was fitted with, from its `data.*`, `model.*`, `fit.*` params."""
    sections = {}
    for name, cls in (("data", DataSpec), ("model", ModelSpec), ("fit", FitSpec)):
        kwargs = {f.name: _value(params[f"{name}.{f.name}"], getattr(cls(), f.name))
                  for f in dataclasses.fields(cls) if f"{name}.{f.name}" in params}
        sections[name] = cls(**kwargs)
    return TrialSpec(**sections)


def resume(run_id: str):
    """Continue a killed run from its last completed epoch, in the same run; returns the TrialResult."""
    from mlflow_dl.data.datasets import load_dataset
    from mlflow_dl.data.split import split_and_scale, subsample_train
    from mlflow_dl.delivery import runs, spool

    journal = os.path.join(spool.journal_dir(), f"{run_id}.jsonl")
    if os.path.exists(journal):
        spool.replay(journal)
    run = runs.existing_run(run_id)
    family = run.data.tags.get(runs.FAMILY_TAG)
    backup = run.data.tags.get(runs.BACKUP_TAG)
    if run.info.status == "FINISHED":
        raise ConfigError(f"run_id={run_id!r} is FINISHED; expected a run that was killed or failed")
    if family not in MLP_FAMILIES:
        raise ConfigError(f"run_id={run_id!r} has family {family!r}; resume knows {', '.join(MLP_FAMILIES)}")
    if not backup or not os.path.isdir(backup):
        raise ConfigError(f"run_id={run_id!r} has no epoch state here ({backup or 'no backup_dir tag'}); "
                          "expected the folder of its BackupAndRestore on this machine")
    spec = spec_from_params(run.data.params)
    ds = load_dataset(spec.data.dataset, spec.data.target, spec.data.task, spec.data.dropna)
    splits = split_and_scale(ds, spec.data)
    fraction = float(run.data.params.get("data.train_fraction", "1"))
    if fraction < 1:
        splits = subsample_train(splits, fraction, spec.data.seed)
    from mlflow_dl.training.trial import run_trial  # tensorflow: only once the run is known to be resumable

    previous = os.environ.get("MLFLOW_RUN_ID")
    os.environ["MLFLOW_RUN_ID"] = run_id  # runs.start_run continues this run, as under `mlflow run`
    try:
        return run_trial(ds, splits, spec, family=family)
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_RUN_ID", None)
        else:
            os.environ["MLFLOW_RUN_ID"] = previous


def reap(older_than: float, experiment: str | None = None) -> list[str]:
    """End KILLED every RUNNING run whose last heartbeat (or start) is older than `older_than` seconds."""
    import mlflow

    from mlflow_dl.delivery import runs

    client = mlflow.MlflowClient()
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise ConfigError(f"experiment={experiment!r} does not exist")
        ids = [found.experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    now = int(time.time() * 1000)
    reaped = []
    for run in client.search_runs(ids, "attributes.status = 'RUNNING'", max_results=5000):
        last = int(run.data.tags.get(runs.HEARTBEAT_TAG, run.info.start_time))
        if now - last > older_than * 1000:
            client.set_tag(run.info.run_id, runs.ERROR_TAG,
                           f"reaped: no heartbeat for {(now - last) / 60000:.0f} min (limit {older_than / 60:.0f} min)")
            client.set_terminated(run.info.run_id, "KILLED", end_time=now)
            reaped.append(run.info.run_id)
    return reaped
