"""A command's own local tracking store, used while the tracking server is down.

A CLI command that trains and finds the server unreachable logs everything, as it would online, into MLflow's
own SQLite store; `mlflow-dl sync` copies it to the server once it is back (delivery/transfer.py).
Layout: `<journal dir>/offline-<stamp>-<hex>/` holding `store.json` (the server it belongs to, the process that
writes it, whether it is complete), `mlflow.db`, `artifacts/` and, once sync started, `synced.jsonl`.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass

STORE_ENV = "MLFLOW_DL_OFFLINE_STORE"  # the folder, while a command (and its workers) log into it
PID_ENV = "MLFLOW_DL_COMMAND_PID"  # the command's process, which marks the store complete when it ends
SERVER_RUN_TAG = "mlflow_dl.server_run_id"  # a local run standing for a run that exists on the server
META = "store.json"
PREFIX = "offline-"


@dataclass(frozen=True)
class OfflineStore:
    folder: str
    server_uri: str  # redacted

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{os.path.join(self.folder, 'mlflow.db')}"

    def meta(self) -> dict:
        with open(os.path.join(self.folder, META), encoding="utf-8") as f:
            return json.load(f)

    def write_meta(self, **changes) -> None:
        meta = {**self.meta(), **changes} if os.path.exists(os.path.join(self.folder, META)) else changes
        tmp = os.path.join(self.folder, META + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f)
        os.replace(tmp, os.path.join(self.folder, META))


def new_folder(journal_folder: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return os.path.abspath(os.path.join(journal_folder, f"{PREFIX}{stamp}-{uuid.uuid4().hex[:8]}"))


def open_store(server_uri: str, journal_folder: str, folder: str | None = None) -> OfflineStore:
    """A store for a command whose server `server_uri` does not answer: new, or `folder` (created if
    missing; the command's worker processes share it)."""
    from mlflow_dl.delivery.uris import redact

    folder = folder or new_folder(journal_folder)
    os.makedirs(os.path.join(folder, "artifacts"), exist_ok=True)
    store = OfflineStore(folder, redact(server_uri))
    if not os.path.exists(os.path.join(folder, META)):
        store.write_meta(tracking_uri=store.server_uri, pid=int(os.environ.get(PID_ENV) or os.getpid()),
                         host=socket.gethostname(), created=int(time.time() * 1000), complete=False,
                         server_run_id=os.environ.get("MLFLOW_RUN_ID") or None)
    return store


def activate(store: OfflineStore) -> None:
    """This process (and the workers it starts) log into `store` from now on."""
    import mlflow

    quiet_table_creation()
    # the run `mlflow run` created is on the server: the store's runs stand for it (SERVER_RUN_TAG)
    os.environ.pop("MLFLOW_RUN_ID", None)
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    os.environ[STORE_ENV] = store.folder
    os.environ["MLFLOW_TRACKING_URI"] = store.tracking_uri
    mlflow.set_tracking_uri(store.tracking_uri)


def quiet_table_creation() -> None:
    """No "Creating initial MLflow database tables" line when a store's first client creates them."""
    import logging

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


def active() -> OfflineStore | None:
    """The store this process logs into instead of the server, if any."""
    folder = os.environ.get(STORE_ENV)
    if not folder or not os.path.isfile(os.path.join(folder, META)):
        return None
    return OfflineStore(folder, json.load(open(os.path.join(folder, META), encoding="utf-8"))["tracking_uri"])


def artifact_location(experiment_name: str) -> str | None:
    """Where an experiment created in the active store keeps its artifacts: inside the store's folder
    (a SQLite store would otherwise put them under ./mlruns of the working folder)."""
    store = active()
    if store is None:
        return None
    import mlflow

    if mlflow.get_tracking_uri() != store.tracking_uri:
        return None
    return os.path.join(store.folder, "artifacts", uuid.uuid5(uuid.NAMESPACE_URL, experiment_name).hex)


def process_alive(meta: dict) -> bool:
    """Whether the process that writes a store still runs (on this machine; elsewhere: assumed so)."""
    if meta.get("host") != socket.gethostname():
        return not meta.get("complete")
    try:
        os.kill(int(meta["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return False
    return True


def stores(journal_folder: str) -> list[OfflineStore]:
    """The offline stores in a journal folder, oldest first."""
    if not os.path.isdir(journal_folder):
        return []
    found = []
    for name in sorted(os.listdir(journal_folder)):
        folder = os.path.abspath(os.path.join(journal_folder, name))
        if name.startswith(PREFIX) and os.path.isfile(os.path.join(folder, META)):
            with open(os.path.join(folder, META), encoding="utf-8") as f:
                found.append(OfflineStore(folder, json.load(f)["tracking_uri"]))
    return found
