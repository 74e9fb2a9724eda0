"""Where trials run: inline (this process), N local worker processes, or tasks on a Ray cluster.

Either way each trial goes through `training.trial.run_trial` and logs its own child run
under the parent; results come back in the order the trials were given.
"""

from __future__ import annotations

import importlib
import os
import threading
from concurrent.futures import ProcessPoolExecutor

from mlflow_dl.runtime import heap, process

_worker: dict = {}


def run_one(ds, splits, trial, family: str, parent_run_id: str):
    """One child run; a failure comes back as a FAILED result, Ctrl-C propagates. `family`: the
    family's module name (its last part tags the run)."""
    from mlflow_dl.data.split import subsample_train
    from mlflow_dl.training.trial import run_trial

    splits = subsample_train(splits, trial.train_fraction, trial.spec.data.seed)
    if trial.prepare is not None:
        splits = trial.prepare(splits)
    builder = {"build_model": trial.build_model} if trial.build_model is not None else {}
    builder.update(after_fit=trial.after_fit)
    return run_trial(ds, splits, trial.spec, family=family.rpartition(".")[2], run_name=trial.name, parent_run_id=parent_run_id,
                     extra_params={"trial": trial.name, "data.train_fraction": str(trial.train_fraction),
                                   **{f"trial.{k}": str(v) for k, v in trial.values.items()}},
                     raise_errors=False, prune=trial.prune, **builder)


def inline(trials, ds, splits, family, parent_run_id, on_result):
    results = []
    for i, trial in enumerate(trials):
        result = run_one(ds, splits, trial, family, parent_run_id)
        results.append(result)
        on_result(i, result)
    return results


def share_cores(threads: int) -> None:
    """This process's TensorFlow on `threads` cores, so processes side by side do not oversubscribe."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _init_worker(tracking_uri: str, data_spec, threads: int, family: str) -> None:
    """Once per worker: quiet (TensorFlow's start-up, MLflow's INFO lines), divide the cores, load and split the data."""
    from mlflow_dl import quiet

    process.own()  # a worker only runs trials: mlflow-dl's process, tuned like the CLI's
    heap.collect_less_often()
    quiet.own_process()
    import mlflow

    share_cores(threads)
    mlflow.set_tracking_uri(tracking_uri)
    from mlflow_dl.data.datasets import load_dataset
    from mlflow_dl.data.split import split_and_scale

    module = importlib.import_module(family)  # the family's module, by the name runner.sweep gave
    if hasattr(module, "load_data"):  # the family's own data (time series), as in runner.sweep
        _worker["data"] = module.load_data(data_spec, ())
    else:
        ds = load_dataset(data_spec.dataset, data_spec.target, data_spec.task, data_spec.dropna)
        _worker["data"] = (ds, split_and_scale(ds, data_spec))
    connect_store()  # the store's engine made now, so that it is frozen with the rest
    # the worker process is ours: what it has loaded stays out of collections for good (a full collection
    # first would slow the worker's start for the few dozen objects it frees)
    heap.hold()


def connect_store() -> None:
    """Connect to the tracking store now; a database store (SQLite, PostgreSQL) that is new gets MLflow's
    schema from this call. An optimisation only: a store that is away is the first run's to report."""
    import mlflow

    try:
        mlflow.MlflowClient().search_experiments(max_results=1)
    except Exception:  # noqa: BLE001
        pass


def _run_in_worker(trial, family, parent_run_id):
    ds, splits = _worker["data"]
    return run_one(ds, splits, trial, family, parent_run_id)


def connect_ray(address: str) -> None:
    """Join the Ray cluster at `address` (auto, or ray://HOST:PORT) before any run starts.

    Tasks log to the same tracking server as this process, so it must be one they can reach.
    """
    import mlflow

    from mlflow_dl.errors import ConfigError

    try:
        import ray as ray_lib
    except ImportError:
        raise ConfigError("executor='ray' needs Ray; expected it installed: pip install 'mlflow-dl[ray]'") from None
    from mlflow_dl.delivery import offline_store

    uri = mlflow.get_tracking_uri()
    if (store := offline_store.active()) is not None:
        raise ConfigError(f"the tracking server at {store.server_uri} does not answer, and Ray tasks log to it; "
                          "start it and run the command again, or use --executor inline or processes")
    if not uri.startswith(("http://", "https://")):
        raise ConfigError(f"tracking_uri={uri!r} is local to this machine; expected a tracking server "
                          "(MLFLOW_TRACKING_URI=http://HOST:PORT) that every Ray task can reach")
    # server credentials, and mlflow-dl's own settings (tf_runtime) as this process has them
    env = {k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_TRACKING_", "MLFLOW_DL_"))}
    try:
        ray_lib.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                     runtime_env={"env_vars": {**env, "TF_CPP_MIN_LOG_LEVEL": "2"}})
    except ConnectionError as exc:
        raise ConfigError(f"ray_address={address!r}: no Ray cluster answered ({exc}); "
                          "expected auto (a local `ray start --head`) or ray://HOST:PORT") from None


def _run_on_ray(tracking_uri, data_spec, family, trial, parent_run_id):
    """A Ray task: the data is loaded once per Ray worker process, then reused by its later tasks."""
    if _worker.get("key") != (tracking_uri, data_spec, family):
        _init_worker(tracking_uri, data_spec, 1, family)
        _worker["key"] = (tracking_uri, data_spec, family)
    return _run_in_worker(trial, family, parent_run_id)


def ray(trials, data_spec, family, parent_run_id, on_result):
    """Each trial a Ray task (one CPU) on the cluster `connect_ray` joined; results as they finish."""
    import mlflow
    import ray as ray_lib

    task = ray_lib.remote(num_cpus=1, max_retries=0)(_run_on_ray)
    uri = mlflow.get_tracking_uri()
    refs = {task.remote(uri, data_spec, family, t, parent_run_id): i for i, t in enumerate(trials)}
    results = [None] * len(trials)
    pending = list(refs)
    try:
        while pending:
            done, pending = ray_lib.wait(pending, num_returns=1)
            for ref in done:
                i = refs[ref]
                results[i] = ray_lib.get(ref)
                on_result(i, results[i])
    except BaseException:
        for ref in pending:
            ray_lib.cancel(ref)
        raise
    return results


def _ready() -> None:
    """A no-op task: submitting one per worker starts them all at once (the pool spawns on demand)."""


def start_workers(data_spec, family, workers: int) -> ProcessPoolExecutor:
    """`workers` - 1 spawned processes beside this one, each importing tensorflow once and taking many
    trials; started now, so their start (a new interpreter, tensorflow, the data) overlaps
    the parent run's. Every worker gets its share of the cores, and so does this process where it is
    mlflow-dl's own and TensorFlow has not run yet; a user's process keeps its TensorFlow threads."""
    import multiprocessing

    import mlflow

    threads = max(1, (os.cpu_count() or 1) // workers)
    if not mlflow.get_tracking_uri().startswith(("http:", "https:")):
        # a new database store gets its schema here, before the workers connect: two processes creating
        # one at once collide (MLflow 3.17's migrations on SQLite: "table _alembic_tmp_... already exists")
        connect_store()
    pool = ProcessPoolExecutor(workers - 1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker,
                               initargs=(mlflow.get_tracking_uri(), data_spec, threads, family))
    for _ in range(workers - 1):
        pool.submit(_ready)
    if process.owned():
        try:
            share_cores(threads)
        except RuntimeError:  # TensorFlow has run in this process already: its threads stay
            pass
    return pool


def processes(pool: ProcessPoolExecutor, workers: int, trials, ds, splits, family, parent_run_id, on_result):
    """The trials shared between this process and `start_workers`' pool: whichever is free takes the
    next one, so no process waits while trials are left and this one is not idle. Results come as
    they finish. Ctrl-C (or a broken worker) stops handing out trials; the running ones end first,
    then the pool is shut down (without waiting for its processes to exit) and the error raised."""
    lock = threading.Lock()
    todo = iter(range(len(trials)))
    results = [None] * len(trials)
    stop = threading.Event()
    errors: list[BaseException] = []

    def take():
        with lock:
            return None if stop.is_set() else next(todo, None)

    def report(i, result):
        with lock:
            results[i] = result
            on_result(i, result)

    def feed():  # one thread per worker: hands it the next trial when it is free
        try:
            while (i := take()) is not None:
                report(i, pool.submit(_run_in_worker, trials[i], family, parent_run_id).result())
        except BaseException as exc:  # Ctrl-C in the worker, a worker gone: raised by this process below
            errors.append(exc)
            stop.set()

    feeders = [threading.Thread(target=feed, name="mlflow-dl-feed", daemon=True) for _ in range(workers - 1)]
    for feeder in feeders:
        feeder.start()
    try:
        while (i := take()) is not None:
            report(i, run_one(ds, splits, trials[i], family, parent_run_id))
    finally:
        stop.set()
        for feeder in feeders:
            feeder.join()
        # every trial has come back: the workers wind down while the parent's summary is made;
        # the pool's own thread joins them, and Python's exit waits for that thread
        pool.shutdown(wait=False)
    if errors:
        raise errors[0]
    return results
