"""Pruning a sweep's losing trials by Optuna's rule, in any process that runs them.

The rule is Optuna's (MedianPruner, or SuccessiveHalvingPruner), never our own: each trial asks the
sweep's Optuna study for a trial, reports its `val_loss` (the curve `model_val_loss` is read from)
every epoch and stops when the pruner says so (prune_callback.py). The study lives in
storage every trial's process can open: a journal file beside the tracking store by default (one
file lock, no server; worker processes and Ray tasks on this machine share it), or the storage
named by MLFLOW_DL_PRUNE_STORAGE (an RDB URL such as postgresql://..., or a journal file on a
filesystem a multi-machine Ray cluster shares). Not MLflow's own database: Optuna's RDB schema and
MLflow's both keep their migrations in the table `alembic_version`, so Optuna refuses that database.
Nothing here imports Keras or TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from mlflow_dl.errors import ConfigError

STORAGE_ENV = "MLFLOW_DL_PRUNE_STORAGE"
RULES = ("median", "halving")


@dataclass(frozen=True)
class PruneSpec:
    """How a sweep prunes. `warmup`: epochs no trial is judged on (None: a tenth of the epochs, at least 2);
    `startup`: trials that must finish before the median rule prunes; `rule`: median (Optuna's
    MedianPruner) or halving (its SuccessiveHalvingPruner, rungs at warmup x 3^k epochs).
    `storage`, `study`: set by the runner for the sweep (picklable, so workers and Ray tasks get them)."""

    rule: str = "median"
    warmup: int | None = None
    startup: int = 2
    reduction_factor: int = 3
    storage: str | None = None
    study: str | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ConfigError(f"prune_rule={self.rule!r} is invalid; expected one of: {', '.join(RULES)}")
        if self.warmup is not None and (not isinstance(self.warmup, int) or self.warmup < 1):
            raise ConfigError(f"prune_warmup={self.warmup!r} is invalid; expected an integer >= 1 (epochs)")
        if not isinstance(self.startup, int) or self.startup < 1:
            raise ConfigError(f"prune_startup={self.startup!r} is invalid; expected an integer >= 1 (trials)")
        if not isinstance(self.reduction_factor, int) or self.reduction_factor < 2:
            raise ConfigError(f"reduction_factor={self.reduction_factor!r} is invalid; expected an integer >= 2")

    def warmup_for(self, epochs: int) -> int:
        return self.warmup if self.warmup is not None else max(2, epochs // 10)

    def pruner(self, epochs: int):
        """Optuna's pruner for fits of `epochs` epochs (steps are 0-based epochs)."""
        import optuna

        warmup = self.warmup_for(epochs)
        if self.rule == "halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup, reduction_factor=self.reduction_factor)
        return optuna.pruners.MedianPruner(n_startup_trials=self.startup, n_warmup_steps=warmup)

    def describe(self, epochs: int) -> str:
        warmup = self.warmup_for(epochs)
        if self.rule == "halving":
            return f"optuna SuccessiveHalvingPruner (rungs from epoch {warmup}, keeps 1/{self.reduction_factor})"
        return f"optuna MedianPruner (warm-up {warmup} epochs, after {self.startup} finished trials)"


def as_spec(prune) -> PruneSpec | None:
    """`prune` as given to a sweep: False/None (off), True (the defaults) or a PruneSpec."""
    if prune is None or prune is False:
        return None
    if prune is True:
        return PruneSpec()
    if isinstance(prune, PruneSpec):
        return prune
    if isinstance(prune, str) and prune.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return PruneSpec() if prune.lower() in ("true", "1", "yes", "on") else None
    raise ConfigError(f"prune={prune!r} is invalid; expected True, False or a PruneSpec")


def location(tracking_uri: str, parent_run_id: str) -> str:
    """Where the sweep's study lives: MLFLOW_DL_PRUNE_STORAGE (an RDB URL, or a folder), else a journal file beside a local store
    (sqlite:///dir/mlflow.db -> dir/mlflow-dl-pruning/<parent>.log), else under ./.mlflow-dl/pruning."""
    given = os.environ.get(STORAGE_ENV)
    if given and "://" in given:
        return given  # an RDB URL: one study per sweep in it
    if given:  # a folder for the journal files
        return os.path.join(os.path.abspath(given), f"{parent_run_id}.log")
    parts = urlsplit(tracking_uri)
    folder = os.path.abspath(os.path.join(".mlflow-dl", "pruning"))
    if parts.scheme == "sqlite" and tracking_uri[len("sqlite:///"):] not in ("", ":memory:"):
        folder = os.path.join(os.path.dirname(os.path.abspath(tracking_uri[len("sqlite:///"):])), "mlflow-dl-pruning")
    elif parts.scheme in ("", "file"):
        folder = os.path.join(os.path.abspath(parts.path or tracking_uri), "mlflow-dl-pruning")
    return os.path.join(folder, f"{parent_run_id}.log")


def open_storage(where: str):
    """Optuna's storage at `where`: an RDB URL, or a journal file (its folder made)."""
    import optuna

    if "://" in where and not where.startswith("file://"):
        return optuna.storages.RDBStorage(where)
    path = where[len("file://"):] if where.startswith("file://") else where
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))


def start_study(spec: PruneSpec, tracking_uri: str, parent_run_id: str) -> PruneSpec:
    """Create the sweep's study (minimising val_loss); the spec trials carry to find it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("prune=True needs Optuna; expected it installed: pip install 'optuna>=4'") from None
    where = location(tracking_uri, parent_run_id)
    name = f"mlflow-dl-{parent_run_id}"
    try:  # the storage's own call: optuna.create_study would print an INFO line in a user's process
        open_storage(where).create_new_study([optuna.study.StudyDirection.MINIMIZE], study_name=name)
    except optuna.exceptions.DuplicatedStudyError:
        pass
    return replace(spec, storage=where, study=name)


def load_study(spec: PruneSpec, epochs: int):
    import optuna

    return optuna.load_study(study_name=spec.study, storage=open_storage(spec.storage), pruner=spec.pruner(epochs))


def full_grid_epochs(epochs_trained: list[int], pruned: list[bool], epochs: list[int]) -> int:
    """Epochs the grid would have trained without pruning: a pruned trial counts its configured epochs
    (an upper bound when early stopping is on), every other trial what it trained."""
    return int(sum(e if p else t for t, p, e in zip(epochs_trained, pruned, epochs)))
