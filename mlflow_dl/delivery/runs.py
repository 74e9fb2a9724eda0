"""Starting and ending MLflow runs the way every mlflow-dl run is started and ended."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import mlflow
from mlflow.entities import RunStatus

from mlflow_dl.delivery import experiments, failover, offline_store, spool, uris

FAMILY_TAG = "mlflow_dl.family"
ERROR_TAG = "mlflow_dl.error"
PARENT_TAG = "mlflow.parentRunId"
HEARTBEAT_TAG = "mlflow_dl.heartbeat"  # ms since epoch, updated every epoch (mlflow-dl reap reads it)
BACKUP_TAG = "mlflow_dl.backup_dir"  # the run's Keras BackupAndRestore folder (mlflow-dl resume reads it)


def start_run(family: str, run_name: str | None = None, experiment: str | None = None,
              parent_run_id: str | None = None, tags: dict | None = None,
              parent_experiment_id: str | None = None) -> mlflow.ActiveRun:
    """Start (or, under `mlflow run`, resume) a run tagged with its family.

    Under `mlflow run` (MLFLOW_RUN_ID exported) the run continues instead of a second one opening. A child names
    its parent by `parent_run_id` (nested or from a worker process) and goes to the parent's experiment
    (`parent_experiment_id` saves a round trip). If the server went away, the run starts in the offline store.
    """
    args = (family, run_name, experiment, parent_run_id, tags, parent_experiment_id)
    if failover.should_fail_over():
        failover.fail_over()
    try:
        return _start_run(*args)
    except Exception as exc:
        if not (uris.connection_lost(exc) and failover.fail_over()):
            raise
        failover.mark_lost()
        return _start_run(*args)  # in the command's offline store


def _is_local(run_id: str) -> bool:
    try:
        mlflow.MlflowClient().get_run(run_id)
        return True
    except mlflow.exceptions.MlflowException:
        return False


def _start_run(family, run_name, experiment, parent_run_id, tags, parent_experiment_id) -> mlflow.ActiveRun:
    tags = {FAMILY_TAG: family, **(tags or {})}
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
        if failover.failed_over() and not _is_local(parent_run_id):
            # the parent is on the server only: the child keeps its id, sync puts it under that run
            parent_experiment_id = experiments.ensure(experiment)
        elif parent_experiment_id is None:
            parent_experiment_id = experiments.of_run(parent_run_id)
        return mlflow.start_run(experiment_id=parent_experiment_id, run_name=run_name,
                                nested=mlflow.active_run() is not None, tags=tags)
    if (store := offline_store.active()) is not None and (server_run := store.meta().get("server_run_id")):
        tags[offline_store.SERVER_RUN_TAG] = server_run  # stands for the run `mlflow run` created on the server
    experiment_id = None
    if experiment or not experiments.from_environment():
        experiment_id = experiments.ensure(experiment)
    if os.environ.get("MLFLOW_RUN_ID"):
        run_name = None  # keep the name `mlflow run` gave its run
    return mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)


def existing_run(run_id: str):
    """The run `run_id` names, or a ConfigError (one line, exit 2) when this tracking store has none."""
    from mlflow_dl.errors import ConfigError

    try:
        return mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise ConfigError(f"run_id={run_id!r} is not a run of the tracking store at "
                          f"{uris.redact(mlflow.get_tracking_uri())}; expected the id of an existing run") from None


def log_dataset(dataset, context: str = "training", attempts: int = 3, run_id: str | None = None) -> None:
    """mlflow.log_input (to `run_id` when given, from any thread), retried when another run wrote the dataset meanwhile.

    MLflow's SQL store looks the dataset up, then inserts it, so parallel runs logging a new dataset collide on
    its unique key; a second try finds the other run's row and only links it.
    """
    for attempt in range(1, attempts + 1):
        try:
            if run_id is None:
                return mlflow.log_input(dataset, context=context)
            entity = mlflow.entities.Dataset(**dataset.to_dict())  # what mlflow.log_input sends
            context_tag = mlflow.entities.InputTag("mlflow.data.context", context)
            return mlflow.MlflowClient().log_inputs(run_id, [mlflow.entities.DatasetInput(entity, [context_tag])])
        except mlflow.exceptions.MlflowException as exc:
            if attempt == attempts or not any(s in str(exc) for s in ("UNIQUE constraint", "duplicate key")):
                raise
            time.sleep(0.1 * attempt)


def backup_dir(run_id: str) -> str:
    """Where Keras' BackupAndRestore keeps a run's last completed epoch (deleted when fit ends normally)."""
    return os.path.abspath(os.path.join(".mlflow-dl", "backup", run_id))


def offline_run(family: str, run_name: str | None = None, experiment: str | None = None) -> dict:
    """The journal record that creates a run later, when the server is back, with today's start time."""
    return {"experiment": experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiments.DEFAULT_EXPERIMENT,
            "experiment_tags": experiments.EXPERIMENT_KIND, "start_time": int(time.time() * 1000),
            "tags": {FAMILY_TAG: family}, "run_name": run_name}


def error_text(error: BaseException) -> str:
    """A failed run's ERROR_TAG: the exception's type and first line."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{type(error).__name__}: {reason}"[:5000]


def end_run(run_id: str, error: BaseException | None = None, tags: dict[str, str] | None = None) -> None:
    """FINISHED, or FAILED with the reason in a tag, or KILLED on Ctrl-C / SIGTERM; `tags` set with it
    (journaled with the end when the server is gone)."""
    client = mlflow.MlflowClient()
    status, tags = RunStatus.to_string(RunStatus.FINISHED), dict(tags or {})
    if error is not None:
        status = "KILLED" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "FAILED"
        tags[ERROR_TAG] = error_text(error)
    end_time = int(time.time() * 1000)
    stand_in = failover.stand_in_of(run_id)
    if stand_in is None and failover.failed_over() and not _is_local(run_id):
        stand_in = failover.stand_in(run_id)  # a run on the server, which is gone: sync ends it
    if stand_in is not None:
        _end_stand_in(run_id, stand_in, status, tags)
        return
    try:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run(status)  # (off MLflow's stack first, even when the server does not take it)
        else:
            client.set_terminated(run_id, status, end_time=end_time)
        for key, value in tags.items():  # after: a server gone at the first call leaves no run on the stack
            client.set_tag(run_id, key, value)
    except Exception as exc:
        if not uris.connection_lost(exc):
            raise
        # the server went away: `mlflow-dl sync` ends the run
        failover.mark_lost()
        journal = spool.Journal(mlflow.get_tracking_uri(), run_id)
        if tags:
            journal.append("tags", tags=tags)
        journal.append("end", status=status, end_time=end_time)
        journal.close()


def _end_stand_in(run_id: str, stand_in: str, status: str, tags: dict) -> None:
    """End the local stand-in of server run `run_id` (sync ends `run_id` so), then take `run_id` off
    MLflow's stack of active runs."""
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_tag(stand_in, key, value)
    active = mlflow.active_run()
    if active is not None and active.info.run_id == stand_in:
        mlflow.end_run(status)
    else:
        client.set_terminated(stand_in, status)
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        try:
            mlflow.end_run(status)  # off the stack first; then MLflow asks this store, which has no such run
        except mlflow.exceptions.MlflowException:
            pass


def _hold_ctrl_c():
    """Note Ctrl-C instead of raising it until the returned release(), which then raises it.

    Starting a run is several calls to MLflow: a Ctrl-C between them would leave the run
    RUNNING with nobody to end it. Main thread only, where Python runs signal handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    pending = []
    previous = signal.signal(signal.SIGINT, lambda *_: pending.append(True))

    def release():
        signal.signal(signal.SIGINT, previous)
        if pending and callable(previous):
            previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt

    return release


@contextlib.contextmanager
def tracked_run(family: str, **kwargs):
    """`with tracked_run("train") as run:`; never leaves the run RUNNING."""
    release = _hold_ctrl_c()
    try:
        run = start_run(family, **kwargs)
    except BaseException:
        release()
        raise
    try:
        release()  # a Ctrl-C held while the run started is raised here, and ends it KILLED
        yield run
    except BaseException as exc:
        end_run(run.info.run_id, exc)
        raise
    end_run(run.info.run_id)
