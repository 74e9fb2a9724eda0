"""`mlflow-dl tune` in Python: a keras-tuner search run (or resumed) under one parent run, its best scored on test.

`tune` checks the input (search_plan.plan_search); `run_search` opens or reopens the parent, builds the tuner on
the bridge's hooks (tuner_bridge), searches, and on the chief summarises the children (search_runs) and scores
the best child's model on the test split. In keras-tuner's distributed mode a worker joins the chief's parent.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import dataclass

import keras
import keras_tuner as kt
import mlflow
import pandas as pd

from mlflow_dl.runtime import heap
from mlflow_dl.config import ModelSpec, TrialSpec
from mlflow_dl.errors import ConfigError
from mlflow_dl.sweeps import search_space as space_module
from mlflow_dl.training import pruning as pruning_module
from mlflow_dl.sweeps.search_plan import SearchPlan, plan_search
from mlflow_dl.sweeps.search_runs import FAMILY, SEARCH_TAG, find_parent, summarize_search
from mlflow_dl.sweeps.tuner_bridge import SearchModel, TrialRuns, TuneBridge
from mlflow_dl.delivery import experiments, failover, runs
from mlflow_dl.fit import plots

# parent params a resumed search must share with the search it continues
SEARCH_PARAMS = ("tune.tuner", "tune.model", "tune.epochs", "tune.space", "data.dataset", "data.target", "data.seed")
WORKER_WAIT_SECONDS = 300  # a worker's longest wait for its chief, and for any one oracle call
ORACLE_GRACE_SECONDS = 60  # an ended search whose oracle stays silent this long is complete


@dataclass(frozen=True)
class TuneResult:
    parent_run_id: str
    search_id: str
    role: str  # single | chief | worker
    table: pd.DataFrame  # one row per child run (empty on a worker)
    best_run_id: str | None


def tune(data=None, tuner: str = "random", max_trials: int = 10, epochs: int = 10,
         space: str | None = None, model: str = "mlp", search_id: str | None = None, batch_size: int = 32,
         experiment: str | None = None, directory: str = "keras_tuner", allow_remote_oracle: bool = False,
         echo=print, prune=None) -> TuneResult:
    """Run (or resume, same `search_id`) a keras-tuner search with every trial an MLflow child run.

    `data` is a DataSpec (model="mlp", default breast_cancer) or, for model="recurrent", a SeriesSpec; all input is
    checked before a run or tuner starts. In keras-tuner's distributed mode the chief serves the oracle and writes
    the parent's summary; each worker logs its trials under the same parent (found by the search id). `prune`:
    True (or a PruneSpec) stops trials by the sweeps' Optuna rule; with tuner="hyperband" Hyperband is the pruner.
    """
    plan = plan_search(data, tuner, max_trials, epochs, space, model, search_id, batch_size, allow_remote_oracle)
    return run_search(plan, experiment=experiment, directory=directory, echo=echo, prune=prune)


def _check_same_search(parent, params: dict[str, str], search_id: str) -> None:
    for key in SEARCH_PARAMS:
        old, new = parent.data.params.get(key), params.get(key)
        if old is not None and old != new:
            raise ConfigError(f"{key}={new!r} differs from search {search_id!r} ({key}={old!r}); "
                              "resume it with the same settings or pick a new --search-id")


def _pruning(prune, tuner: str, parent_id: str):
    """The search's PruneSpec with its study made (every process of the search opens the same one); None
    for Hyperband, whose brackets already stop trials early and resume them from checkpoints."""
    prune = pruning_module.as_spec(prune)
    if prune is None or tuner == "hyperband":
        return None
    return pruning_module.start_study(prune, mlflow.get_tracking_uri(), parent_id)


def run_search(plan: SearchPlan, experiment: str | None = None, directory: str = "keras_tuner",
               echo=print, prune=None) -> TuneResult:
    """Run a search `search_plan.plan_search` checked (and loaded the data of): the parent run, the trials."""
    pruning_module.as_spec(prune)  # a bad value fails before any run
    base = TrialSpec(data=plan.data, model=ModelSpec(), fit=plan.fit)  # the model part is replaced per trial
    params = {**{k: v for k, v in base.params().items() if k.startswith("data.")},
              "tune.tuner": plan.tuner, "tune.model": plan.model, "tune.epochs": str(plan.epochs),
              "tune.search_id": plan.search_id, "tune.space": space_module.space_json(plan.space_map),
              "fit.batch_size": str(plan.batch_size)}
    experiment_id = experiments.ensure(experiment)
    parent = find_parent(plan.search_id, experiment_id)
    if parent is not None:
        _check_same_search(parent, params, plan.search_id)
    if plan.role == "worker":
        return _join_as_worker(plan, base, experiment_id, directory, echo, prune)
    return _run_parent(plan, base, params, parent, experiment, directory, echo, prune)


def _bridge(plan: SearchPlan, base: TrialSpec, parent_id: str, experiment_id: str, echo, resumed: bool,
            prune) -> TuneBridge:
    """The hooks' state for this process's trials, pruning by the search's study (not with Hyperband)."""
    bridge = TuneBridge(parent_id, experiment_id, plan.search_id, base, plan.space_map, plan.ds, plan.splits, echo,
                        plan.model, resumed=resumed)
    bridge.prune = _pruning(prune, plan.tuner, parent_id)
    return bridge


def _run_parent(plan: SearchPlan, base: TrialSpec, params: dict, parent, experiment: str | None, directory: str,
                echo, prune) -> TuneResult:
    """The chief (or the only process): the search inside its parent run, opened or (resumed) reopened."""
    search_id = plan.search_id
    run = (mlflow.start_run(run_id=parent.info.run_id) if parent is not None else
           runs.start_run(FAMILY, run_name=f"tune {plan.tuner} {search_id}", experiment=experiment,
                          tags={SEARCH_TAG: search_id}))
    run_id = run.info.run_id
    try:
        if parent is None:
            mlflow.log_params(params)
        else:
            echo(f"resuming search {search_id} (parent run {run_id})")
        mlflow.set_tag("tune.max_trials", str(plan.max_trials))
        bridge = _bridge(plan, base, run_id, run.info.experiment_id, echo, parent is not None, prune)
        if pruning_module.as_spec(prune) is not None:
            mlflow.set_tag("tune.prune", "keras-tuner Hyperband" if plan.tuner == "hyperband"
                           else bridge.prune.describe(plan.epochs))
        result = _search(bridge, plan.role, plan.tuner, plan.max_trials, plan.epochs, directory)
    except BaseException as exc:
        runs.end_run(run_id, exc)
        raise
    runs.end_run(run_id)
    return result


# -- a worker joining its chief -------------------------------------------------------
def _join_as_worker(plan: SearchPlan, base: TrialSpec, experiment_id: str, directory: str, echo,
                    prune) -> TuneResult:
    """A keras-tuner worker: its trials under the chief's parent; nothing to run once the search is complete."""
    parent = _wait_for_parent(plan.search_id, experiment_id)
    if parent.info.status != "RUNNING":
        echo(f"search {plan.search_id} is already complete (parent run {parent.info.run_id}); nothing left to run")
        return TuneResult(parent.info.run_id, plan.search_id, plan.role, pd.DataFrame(), None)
    # keras-tuner waits up to an hour for an oracle that is gone; the chief is up by now. A private
    # module: if it moved, keras-tuner's own hour stands (README, "Workarounds")
    try:
        from keras_tuner.src.distribute import oracle_client

        oracle_client.TIMEOUT = WORKER_WAIT_SECONDS
    except ImportError:
        pass
    bridge = _bridge(plan, base, parent.info.run_id, experiment_id, echo, True, prune)
    return _search(bridge, plan.role, plan.tuner, plan.max_trials, plan.epochs, directory)


def _oracle_answers() -> bool:
    """Is anything listening at KERASTUNER_ORACLE_IP:PORT (a chief serving, or starting to)?"""
    address = (os.environ["KERASTUNER_ORACLE_IP"].strip("[]"), int(os.environ["KERASTUNER_ORACLE_PORT"]))
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


def _wait_for_parent(search_id: str, experiment_id: str):
    """A worker joins a search its chief is running: the parent exists and is RUNNING (a resumed one is reopened).

    A worker that starts after the others have run every trial finds the parent ended
    and no oracle listening: once that lasts ORACLE_GRACE_SECONDS (long enough for a
    chief that resumes the search to reopen it), the ended parent is returned.
    """
    deadline = time.time() + WORKER_WAIT_SECONDS
    silent_since = None
    while time.time() < deadline:
        parent = find_parent(search_id, experiment_id)
        if parent is not None and parent.info.status == "RUNNING":
            return parent
        if parent is not None and parent.info.status == "FINISHED" and not _oracle_answers():
            silent_since = silent_since or time.time()
            if time.time() - silent_since >= ORACLE_GRACE_SECONDS:
                return parent
        else:
            silent_since = None
        time.sleep(1)
    raise ConfigError(f"search_id={search_id!r} has no running parent run after {WORKER_WAIT_SECONDS}s; "
                      "expected the chief (KERASTUNER_TUNER_ID=chief) to be running that search")


def _finished_without_us(parent_id: str, grace: float = 60.0) -> bool:
    """After a gRPC error on a worker: did the chief end the search (parent FINISHED) meanwhile?"""
    client = mlflow.MlflowClient()
    deadline = time.time() + grace
    while time.time() < deadline:
        status = client.get_run(parent_id).info.status
        if status != "RUNNING":
            return status == "FINISHED"
        time.sleep(1)
    return False


# -- the search and its summary ---------------------------------------------------------
def _make_tuner(kind: str, bridge: TuneBridge, max_trials: int, epochs: int, seed: int, directory: str, project: str):
    base = {"random": kt.RandomSearch, "grid": kt.GridSearch, "bayesian": kt.BayesianOptimization,
            "hyperband": kt.Hyperband}[kind]
    cls = type(f"Mlflow{base.__name__}", (TrialRuns, base), {"bridge": bridge})
    common = dict(hypermodel=SearchModel(bridge), objective="val_loss", seed=seed, directory=directory,
                  project_name=project, overwrite=False)
    if kind == "hyperband":
        tuner = cls(max_epochs=epochs, factor=3, **common)
        tuner.oracle.max_trials = max_trials  # Hyperband has no such argument; its oracle honours it
        return tuner
    return cls(max_trials=max_trials, **common)


def _search(bridge: TuneBridge, role: str, kind: str, max_trials: int, epochs: int, directory: str) -> TuneResult:
    """Run keras-tuner's search; the chief (or the only process) then summarises on the parent."""
    run_id, search_id, splits = bridge.parent_id, bridge.search_id, bridge.splits
    tuner = _make_tuner(kind, bridge, max_trials, epochs, bridge.base.data.seed, directory, search_id)
    # the recurrent model's windows depend on the trial (timesteps): its fit takes them, not search's args
    data = () if bridge.model == "recurrent" else (splits.x_train, splits.y_train)
    validation = None if bridge.model == "recurrent" else (splits.x_val, splits.y_val)
    # the heap frozen through the summary too: let go before it, its first full collection would scan
    # all that TensorFlow loaded inside the parent run
    with heap.frozen():
        try:
            tuner.search(*data, validation_data=validation, epochs=epochs, batch_size=bridge.base.fit.batch_size,
                         verbose=0)
        except BaseException as exc:
            bridge.abort(exc)
            # the chief stops serving once every trial is done: a worker asking just then gets a gRPC error
            if role == "worker" and type(exc).__module__.startswith("grpc") and _finished_without_us(run_id):
                bridge.echo(f"search {search_id} was completed by the other workers")
                return TuneResult(run_id, search_id, role, pd.DataFrame(), None)
            raise
        if role == "worker":
            return TuneResult(run_id, search_id, role, pd.DataFrame(), None)
        failover.follow(run_id)  # the server went away during the trials: the summary goes offline too
        table, best_run_id = _summarize(tuner, run_id, bridge.experiment_id, bridge)
    return TuneResult(run_id, search_id, role, table, best_run_id)


def _ended_table(bridge: TuneBridge) -> tuple[pd.DataFrame, dict[str, dict]]:
    """children_table of the trials this process ran, from what it kept of them (no server needed)."""
    ended = [bridge.ended[k] for k in sorted(bridge.ended)]
    return (pd.DataFrame([row for row, _ in ended]),
            {row["trial"]: {"val_loss": curve} for row, curve in ended})


def _summarize(tuner, parent_id: str, experiment_id: str, bridge: TuneBridge) -> tuple[pd.DataFrame, str | None]:
    """The search's summary (summarize_search), then the best model on the test split."""
    from mlflow_dl.training.trial import test_metrics, test_outputs, test_plot

    offline = failover.failed_over()  # some children on the server, the rest in the offline store
    table, best_run_id, values = summarize_search(tuner, parent_id, experiment_id,
                                                  _ended_table(bridge) if offline else None)
    if best_run_id is None:
        return table, None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=best_run_id, artifact_path="checkpoints/best.keras",
                                                       dst_path=tmp)
            model = keras.saving.load_model(path, safe_mode=True)
        except Exception:
            if not offline:
                raise
            # the best child is on the server, which is gone: keras-tuner's checkpoint of that trial
            # (the same best epoch by val_loss, its objective)
            model = tuner.get_best_models(1)[0]
    splits = bridge.trial_splits(values)
    raw, loss = test_outputs(model, splits)
    mlflow.log_metrics(test_metrics(splits, raw, loss))
    artifact, fig = test_plot(splits, raw)
    mlflow.log_figure(fig, artifact)
    plots.close(fig)
    return table, best_run_id
