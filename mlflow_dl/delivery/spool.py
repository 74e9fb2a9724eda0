"""The offline journal: what a run logs, on disk first, so a tracking server that goes away loses nothing.

One append-only JSON-lines file per run under MLFLOW_DL_JOURNAL_DIR (default `.mlflow-dl/journal`, else a
per-user folder); each record gets a sequence number and an `ack` line once the server has it. Replay sends
unacknowledged records in order, idempotent per (run, key, step); a run created offline is created once (its
server id is journaled as `bind`). A fully acknowledged journal is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import uuid

from mlflow.entities import Metric, Param, RunTag

from mlflow_dl.delivery import rejection
from mlflow_dl.delivery.offline_store import PID_ENV
from mlflow_dl.delivery.uris import artifact_path, redact

JOURNAL_DIR_ENV = "MLFLOW_DL_JOURNAL_DIR"


def journal_dir() -> str:
    return os.environ.get(JOURNAL_DIR_ENV) or os.path.join(".mlflow-dl", "journal")


def fallback_dirs() -> list[str]:
    """Where journals go when journal_dir() cannot be written (a read-only working folder): a per-user
    folder in the XDG cache, else one in the system's temporary folder."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    user = getattr(os, "getuid", lambda: "user")()
    return [os.path.join(cache, "mlflow-dl", "journal"), os.path.join(tempfile.gettempdir(), f"mlflow-dl-{user}", "journal")]


_said_moved: set[str] = set()  # the folders a note already said could not be written (once per process)


def _open_in(directories: list[str], name: str):
    """(folder, file opened for appending) in the first of `directories` that can be written; a one-line
    note on stderr when that is not the first."""
    failure = None
    for directory in directories:
        try:
            os.makedirs(directory, exist_ok=True)
            handle = open(os.path.join(directory, name), "a", encoding="utf-8")
        except OSError as exc:
            failure = failure or exc
            continue
        if failure is not None and directories[0] not in _said_moved:
            _said_moved.add(directories[0])
            print(f"mlflow-dl: cannot write the journal in {directories[0]} ({failure.strerror or failure}); "
                  f"journaling to {directory} instead (`mlflow-dl sync` replays it)", file=sys.stderr)
        return directory, handle
    raise failure


class Journal:
    """Append-only journal of one run; thread-safe (the training thread appends, the sender acks)."""

    def __init__(self, tracking_uri: str, run_id: str | None, directory: str | None = None):
        self.key = run_id or f"offline-{uuid.uuid4().hex}"
        self.dir, self._file = _open_in([os.path.abspath(directory or journal_dir()), *fallback_dirs()],
                                        f"{self.key}.jsonl")
        self.path = os.path.join(self.dir, f"{self.key}.jsonl")
        self._seq = _last_seq(self.path)  # a run's journal opened again (its run ended after the fit) goes on
        self._lock = threading.Lock()
        self._unacked: set[int] = set()
        # `command`: the CLI command whose processes write this journal, so it reports only its own (outage.py)
        self._write({"op": "open", "tracking_uri": redact(tracking_uri), "run_id": run_id,
                     "command": os.environ.get(PID_ENV)})

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def append(self, op: str, flush: bool = False, **payload) -> dict:
        """Journal one record (flushed to the OS with flush=True, once per epoch); returns it."""
        with self._lock:
            self._seq += 1
            self._unacked.add(self._seq)
            record = {"seq": self._seq, "op": op, **payload}
            self._write(record)
            if flush:
                self._file.flush()
            return record

    def keep_file(self, local_path: str) -> str:
        """A copy of an artifact file inside the journal (the original may be a temporary file)."""
        folder = os.path.join(self.dir, f"{self.key}.files", uuid.uuid4().hex[:8])
        os.makedirs(folder)
        return shutil.copy2(local_path, folder)

    def ack(self, seq: int) -> None:
        with self._lock:
            self._unacked.discard(seq)
            self._write({"ack": seq})

    def bind(self, run_id: str) -> None:
        with self._lock:
            self._write({"bind": run_id})
            self._file.flush()

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> bool:
        """Close; delete the journal when everything reached the server. True if deleted."""
        with self._lock:
            self._file.close()
            if self._unacked:
                return False
            os.remove(self.path)
            shutil.rmtree(os.path.join(self.dir, f"{self.key}.files"), ignore_errors=True)
            return True


def unsent(path: str, command: str | None = None) -> int:
    """How many records of a journal file the server has not acknowledged; with `command` (a CLI command's
    process id), 0 unless that command's processes wrote the journal."""
    seqs, acked, commands = set(), set(), set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip().endswith("}"):
                record = json.loads(line)
                seqs.add(record.get("seq"))
                acked.add(record.get("ack"))
                if record.get("op") == "open":
                    commands.add(record.get("command"))
    if command is not None and command not in commands:
        return 0
    return len(seqs - acked - {None})


def _last_seq(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        return max((json.loads(line).get("seq", 0) for line in f if line.strip().endswith("}")), default=0)


def send(client, run_id: str | None, record: dict) -> str:
    """Apply one journal record to the tracking server; returns the run id (created for `create`)."""
    op = record["op"]
    if op == "create":
        if run_id is None:
            experiment = client.get_experiment_by_name(record["experiment"])
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(
                record["experiment"], tags=record.get("experiment_tags") or {})
            run_id = client.create_run(experiment_id, start_time=record["start_time"], tags=record["tags"],
                                       run_name=record.get("run_name")).info.run_id
        return run_id
    if op == "metrics":
        client.log_batch(run_id, metrics=[Metric(k, v, ts, step) for k, v, ts, step in record["metrics"]],
                         tags=[RunTag(k, v) for k, v in record.get("tags", {}).items()], synchronous=True)
    elif op == "params":
        client.log_batch(run_id, params=[Param(k, v) for k, v in record["params"].items()], synchronous=True)
    elif op == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in record["tags"].items()], synchronous=True)
    elif op == "artifact":
        client.log_artifact(run_id, record["file"], artifact_path(record.get("artifact_path")))
    elif op == "end":
        client.set_terminated(run_id, record["status"], end_time=record["end_time"])
    return run_id


def _send_or_drop(client, run_id: str | None, record: dict) -> tuple[str | None, bool]:
    """send(); what the server refuses for good (a param logged again with another value) is dropped, item by
    item, with a warning line, so that it is acknowledged rather than sent again at every sync. (run id,
    whether anything of the record was taken)."""
    try:
        return send(client, run_id, record), True
    except Exception as exc:
        if (refused := rejection.reason(exc)) is None:
            raise
    parts = rejection.apart(record)
    if len(parts) > 1:
        return run_id, any([_send_or_drop(client, run_id, part)[1] for part in parts])
    print(f"mlflow-dl: the tracking server refused {rejection.describe(record)} of run {run_id}; dropped: {refused}",
          file=sys.stderr)
    return run_id, False


def replay(path: str, client=None) -> int:
    """Send what a journal file holds without an ack, in order; returns how many records were sent."""
    import mlflow

    lines = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip().endswith("}")]
    header = lines[0]
    uri = header.get("tracking_uri")
    if uri and redact(mlflow.get_tracking_uri()) == uri:
        uri = mlflow.get_tracking_uri()  # the journal keeps no password: take it from the environment again
    client = client or mlflow.MlflowClient(uri)
    run_id = header.get("run_id")
    acked = {r["ack"] for r in lines if "ack" in r}
    run_id = next((r["bind"] for r in reversed(lines) if "bind" in r), run_id)
    sent = 0
    with open(path, "a", encoding="utf-8") as out:
        for record in lines:
            if "seq" not in record or record["seq"] in acked:
                continue
            bound, delivered = _send_or_drop(client, run_id, record)
            if bound != run_id:
                run_id = bound
                out.write(json.dumps({"bind": run_id}) + "\n")
            out.write(json.dumps({"ack": record["seq"]}) + "\n")
            out.flush()
            sent += delivered
    os.remove(path)
    shutil.rmtree(path[: -len(".jsonl")] + ".files", ignore_errors=True)
    return sent


def replay_all(directory: str | None = None) -> list[tuple[str, int]]:
    """Replay every journal in the folder (oldest first); [(file name, records sent)]."""
    folders = [directory] if directory else [journal_dir(), *fallback_dirs()]  # where a read-only folder sent them
    paths = [os.path.join(f, n) for f in dict.fromkeys(folders) if os.path.isdir(f)
             for n in os.listdir(f) if n.endswith(".jsonl")]
    return [(os.path.basename(p), replay(p)) for p in sorted(paths, key=os.path.getmtime)]
