"""A CLI command whose tracking server goes away mid-command goes on in its offline store.

Only in a CLI command's processes (FAILOVER_ENV, inherited by its workers): switching the tracking URI is
process-wide, which a user's process must not see. Runs created after the server is found gone go to the
offline store (children keep their server parent's id); a server-only run that still logs gets a local
stand-in tagged `mlflow_dl.server_run_id`, which `mlflow-dl sync` writes into that server run.
"""

from __future__ import annotations

import os

FAILOVER_ENV = "MLFLOW_DL_FAILOVER_STORE"  # the folder this command's processes go to if the server goes away

_state: dict = {"lost": False, "stand_ins": {}}


def enabled() -> bool:
    return bool(os.environ.get(FAILOVER_ENV))


def failed_over() -> bool:
    from mlflow_dl.delivery import offline_store

    return offline_store.active() is not None and os.environ.get(offline_store.STORE_ENV) == os.environ.get(
        FAILOVER_ENV)


def mark_lost() -> None:
    """A call found the server gone: the next run to start goes offline without waiting on MLflow's retries."""
    _state["lost"] = True


def should_fail_over() -> bool:
    """The server was lost earlier in this process and still does not answer one bounded probe."""
    import mlflow

    from mlflow_dl.delivery.uris import reachable

    return enabled() and not failed_over() and _state["lost"] and not reachable(mlflow.get_tracking_uri())


def fail_over() -> bool:
    """From now on this process logs into the command's offline store; False where failover is not enabled."""
    if not enabled():
        return False
    if failed_over():
        return True
    import mlflow

    from mlflow_dl.delivery import offline_store

    import fcntl

    folder = os.environ[FAILOVER_ENV]
    os.makedirs(folder, exist_ok=True)
    # the command's workers may all find the server gone at once: one at a time, the first
    # creates the store and MLflow's tables (two processes creating them both fail)
    with open(os.path.join(folder, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        store = offline_store.open_store(mlflow.get_tracking_uri(), os.path.dirname(folder), folder=folder)
        offline_store.quiet_table_creation()
        mlflow.MlflowClient(store.tracking_uri).search_experiments(max_results=1)
    offline_store.activate(store)
    return True


def stand_in(server_run_id: str) -> str:
    """The local run standing for a run that exists only on the server (created once per process)."""
    import mlflow

    from mlflow_dl.delivery import experiments, offline_store

    if server_run_id not in _state["stand_ins"]:
        experiment_id = experiments.ensure(None)
        run = mlflow.MlflowClient().create_run(experiment_id, tags={offline_store.SERVER_RUN_TAG: server_run_id})
        _state["stand_ins"][server_run_id] = run.info.run_id
    return _state["stand_ins"][server_run_id]


def stand_in_of(run_id: str) -> str | None:
    return _state["stand_ins"].get(run_id)


def follow(run_id: str) -> None:
    """Before the active run `run_id` logs again (a sweep's summary): if the server is gone, its stand-in
    becomes the active run, so MLflow's fluent calls log into the offline store."""
    import mlflow

    from mlflow_dl.delivery.uris import reachable

    # probed even when this process saw no failure: worker processes may have met it
    if not failed_over() and not (enabled() and not reachable(mlflow.get_tracking_uri()) and fail_over()):
        return
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.start_run(run_id=stand_in(run_id), nested=True)
