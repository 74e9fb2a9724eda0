"""What a CLI command does when the tracking server does not answer: train offline, or fail in seconds.

One bounded probe (`uris.reachable`) instead of MLflow's minutes of retries. A command that trains logs into an
offline store (delivery/offline_store.py), names `mlflow-dl sync` and exits EXIT_JOURNALED; one that needs the
server stops with exit code 2. A local store (sqlite:///, a folder) is never down.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys

from mlflow_dl.errors import MlflowDLError

PROBE_TIMEOUT = 3.0
EXIT_JOURNALED = 3  # trained; what the server did not get waits in the journal for `mlflow-dl sync`
EXIT_SERVER_LOST = 4  # the server stopped answering during the command, which stopped; the journal keeps the rest
# later calls of a command that found the server up: a server that goes away costs about a minute per call,
# not MLflow's four (its default retries ride out a restart of a few seconds either way)
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class ServerUnreachable(MlflowDLError):
    """The tracking server (or registry) a command needs does not answer."""


def _down(uri: str) -> bool:
    from mlflow_dl.delivery.uris import reachable

    return not reachable(uri, timeout=PROBE_TIMEOUT)  # (a local store always answers)


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", "")


def offline() -> bool:
    """Whether this command trains into an offline store (the server did not answer its probe)."""
    from mlflow_dl.delivery.offline_store import STORE_ENV

    return bool(os.environ.get(STORE_ENV))


def needs_server(command: str, what: str):
    """Decorate a click callback that cannot work without the server: one line and exit 2 when it is down."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            from mlflow_dl.delivery.uris import redact

            registry = os.environ.get("MLFLOW_REGISTRY_URI", "") if command == "serve" else ""
            uri = registry or tracking_uri()
            if _down(uri):
                raise ServerUnreachable(
                    f"the tracking server at {redact(uri)} does not answer; `mlflow-dl {command}` needs it to "
                    f"{what}; start it (or point MLFLOW_TRACKING_URI at one that answers) and run the command again")
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def trains_offline(fn):
    """Decorate a click callback that trains: with the server down it trains into an offline store, then
    says where the results wait and exits EXIT_JOURNALED."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for key, value in HTTP_LIMITS.items():
            os.environ.setdefault(key, value)
        uri = tracking_uri()
        if not _down(uri):
            return _online(fn, uri, *args, **kwargs)
        saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
        store = _go_offline(uri)
        try:
            fn(*args, **kwargs)
        finally:
            kept = _close(store)
            _restore(saved)  # (a command run in-process leaves the environment as it found it)
            if kept:
                from mlflow_dl.delivery.uris import redact

                print(f"mlflow-dl: the tracking server at {redact(uri)} did not answer; the runs wait in "
                      f"{store.folder}; run `mlflow-dl sync` once it is back (exit code {EXIT_JOURNALED})",
                      file=sys.stderr, flush=True)
        if kept:
            sys.exit(EXIT_JOURNALED)

    return wrapper


def _online(fn, uri: str, *args, **kwargs):
    """fn with the server up; if it stops answering (after MLflow's retries): one line, EXIT_SERVER_LOST."""
    import time

    from mlflow_dl.delivery import failover, offline_store, spool, uris

    # where this command's processes go on if the server goes away during it (created only then)
    os.environ[failover.FAILOVER_ENV] = offline_store.new_folder(spool.journal_dir())
    os.environ[offline_store.PID_ENV] = str(os.getpid())
    started, outcome = time.time(), "stopped"
    try:
        fn(*args, **kwargs)
        outcome = "finished"
    except Exception as exc:
        if not uris.connection_lost(exc):
            raise
    finally:
        folder = os.environ.pop(failover.FAILOVER_ENV)  # (a command run in-process leaves nothing behind)
        os.environ.pop(offline_store.PID_ENV, None)
        kept = os.path.isdir(folder) and _close(offline_store.OfflineStore(folder, uris.redact(uri)))
    if outcome == "finished" and not kept and not _journals_since(spool.journal_dir(), started, str(os.getpid())):
        return
    print(f"mlflow-dl: the tracking server at {uris.redact(uri)} stopped answering during the command, which "
          f"{outcome}; what it could not deliver waits in {os.path.abspath(spool.journal_dir())}; run `mlflow-dl "
          f"sync` once it is back (exit code {EXIT_SERVER_LOST})", file=sys.stderr, flush=True)
    sys.exit(EXIT_SERVER_LOST)


def _restore(saved: dict) -> None:
    import mlflow

    from mlflow_dl.delivery import offline_store

    os.environ.pop(offline_store.STORE_ENV, None)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])


def _journals_since(folder: str, started: float, command: str) -> bool:
    """Whether runs of this command left records in their journals that the server never acknowledged
    (another command's journals in the same folder, such as one running beside it, are not this one's)."""
    from mlflow_dl.delivery.spool import unsent

    try:
        paths = [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".jsonl")]
        return any(os.path.getmtime(p) >= started - 1 and unsent(p, command) for p in paths)
    except OSError:
        return False


def _go_offline(uri: str):
    from mlflow_dl.delivery import experiments, offline_store, spool

    store = offline_store.open_store(uri, spool.journal_dir())
    offline_store.activate(store)
    if os.environ.get("MLFLOW_EXPERIMENT_NAME"):  # created here, with its artifacts inside the store
        experiments.ensure(os.environ["MLFLOW_EXPERIMENT_NAME"])
    return store


def _close(store) -> bool:
    """The store marked complete; False (and the store gone) when nothing was logged into it."""
    import mlflow
    from mlflow.entities import ViewType

    store.write_meta(complete=True)
    client = mlflow.MlflowClient(store.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    if experiments and client.search_runs(experiments, run_view_type=ViewType.ALL, max_results=1):
        return True
    shutil.rmtree(store.folder, ignore_errors=True)
    return False


def sync_stores(journal_folder: str | None = None, echo=print) -> int:
    """`mlflow-dl sync` for the offline stores of a journal folder; how many were copied. One line and
    exit 2 when the server a store belongs to does not answer."""
    from mlflow_dl.delivery import offline_store, spool, transfer
    from mlflow_dl.delivery.uris import redact

    folder = journal_folder or spool.journal_dir()
    journals = os.path.isdir(folder) and any(n.endswith(".jsonl") for n in os.listdir(folder))
    if journals and _down(tracking_uri()):
        raise ServerUnreachable(f"the tracking server at {redact(tracking_uri())} does not answer; the journals "
                                f"in {os.path.abspath(folder)} wait for it; run `mlflow-dl sync` again once it is back")
    copied = 0
    for store in offline_store.stores(folder):
        uri = transfer.server_uri(store.server_uri)
        if _down(uri):
            raise ServerUnreachable(f"the tracking server at {redact(uri)} does not answer; {store.folder} waits "
                                    "for it; run `mlflow-dl sync` again once it is back")
        sent = transfer.sync_store(store, echo)
        if sent is not None:
            echo(f"{os.path.basename(store.folder)}: {sent} runs sent to {redact(uri)}")
            copied += 1
    return copied
