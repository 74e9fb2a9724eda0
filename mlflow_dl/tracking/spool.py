"""The offline journal: what a run logs, on disk first, so a tracking server that goes away loses nothing.

One append-only JSON-lines file per run under MLFLOW_DL_JOURNAL_DIR (default
`.mlflow-dl/journal` in the working folder). Every record (run creation,
metric batch, params, tags, artifact file, end) gets a sequence number; once
the server has it, an `ack` line follows. Replay sends the records without an
ack, in order. It is idempotent per (run, key, step): a metric row keeps the
timestamp it was journaled with, and MLflow's SQL stores keep one row for
identical (key, value, timestamp, step), params accept the same value again,
tags and artifacts overwrite. A run created offline is created at replay with
its original start time, and the id it got is journaled (`bind`), so it is
created once. A journal whose every record is acknowledged is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid

from mlflow.entities import Metric, Param, RunTag

from mlflow_dl.tracking.runs import artifact_path, redact

JOURNAL_DIR_ENV = "MLFLOW_DL_JOURNAL_DIR"


def journal_dir() -> str:
    return os.environ.get(JOURNAL_DIR_ENV) or os.path.join(".mlflow-dl", "journal")


class Journal:
    """Append-only journal of one run; thread-safe (the training thread appends, the sender acks)."""

    def __init__(self, tracking_uri: str, run_id: str | None, directory: str | None = None):
        self.key = run_id or f"offline-{uuid.uuid4().hex}"
        self.dir = os.path.abspath(directory or journal_dir())
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, f"{self.key}.jsonl")
        self._seq = _last_seq(self.path)  # a run's journal opened again (its run ended after the fit) goes on
        self._file = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self._unacked: set[int] = set()
        self._write({"op": "open", "tracking_uri": redact(tracking_uri), "run_id": run_id})

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

    def close(self) -> bool:
        """Close; delete the journal when everything reached the server. True if deleted."""
        with self._lock:
            self._file.close()
            if self._unacked:
                return False
            os.remove(self.path)
            shutil.rmtree(os.path.join(self.dir, f"{self.key}.files"), ignore_errors=True)
            return True


def unsent(path: str) -> int:
    """How many records of a journal file the server has not acknowledged."""
    seqs, acked = set(), set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip().endswith("}"):
                record = json.loads(line)
                seqs.add(record.get("seq"))
                acked.add(record.get("ack"))
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
            bound = send(client, run_id, record)
            if bound != run_id:
                run_id = bound
                out.write(json.dumps({"bind": run_id}) + "\n")
            out.write(json.dumps({"ack": record["seq"]}) + "\n")
            out.flush()
            sent += 1
    os.remove(path)
    shutil.rmtree(path[: -len(".jsonl")] + ".files", ignore_errors=True)
    return sent


def replay_all(directory: str | None = None) -> list[tuple[str, int]]:
    """Replay every journal in the folder (oldest first); [(file name, records sent)]."""
    folder = directory or journal_dir()
    if not os.path.isdir(folder):
        return []
    names = sorted((n for n in os.listdir(folder) if n.endswith(".jsonl")),
                   key=lambda n: os.path.getmtime(os.path.join(folder, n)))
    return [(n, replay(os.path.join(folder, n))) for n in names]
