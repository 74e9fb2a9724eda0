"""Metric, param and tag batches sent from a background thread, so `fit` never waits on the tracking server.

Each record is journaled first (delivery/spool.py); one daemon thread sends them in order as `log_batch` calls,
retrying with backoff until the server is back. Nothing is dropped but what the server refuses (a 4xx:
delivery/rejection.py), with a warning and a tag. `flush` waits while the server takes records, bounded by a
timeout without progress; what stays unsent is left in the journal for `mlflow-dl sync`.
"""

from __future__ import annotations

import collections
import sys
import threading
import time

from mlflow.entities import Metric, Param, RunTag

from mlflow_dl.delivery import rejection, spool, uris

MAX_BATCH = 1000
SEND_INTERVAL = 1.0  # seconds between sends while training: epochs coalesce, the server is spared a call each
BATCHABLE = ("metrics", "params", "tags")
_REJECTED_CHARS = 1000  # REJECTED_TAG's value at most (MLflow takes 8,000)


class BackgroundLogger:
    def __init__(self, client, run_id: str | None, journal: spool.Journal, create: dict | None = None):
        """`run_id` None: the run does not exist yet; `create` (spool record fields) makes it first."""
        self.client, self.run_id, self.journal = client, run_id, journal
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self.last_error: Exception | None = None
        self._sent = 0  # records delivered so far: `flush` waits as long as this moves
        self._waiting = 0  # callers in `flush`: while there are any, send without pausing
        self._last_send = 0.0
        self._rejected: list[str] = []  # what the server refused so far, for REJECTED_TAG
        if create is not None:
            self._put(journal.append("create", flush=True, **create))
        self._thread = threading.Thread(target=self._loop, name="mlflow-dl-logger", daemon=True)
        self._thread.start()

    def _put(self, record: dict) -> None:
        with self._cond:
            self._items.append(record)
            self._cond.notify_all()

    def log_metrics(self, values: dict[str, float], step: int, tags: dict[str, str] | None = None,
                    timestamp: int | None = None) -> None:
        """Once per epoch: journal (flushed) and queue; no network on the caller's thread."""
        now = timestamp or int(time.time() * 1000)
        self._put(self.journal.append("metrics", flush=True, metrics=[[k, float(v), now, step] for k, v in values.items()],
                                      tags=tags or {}))

    def log_params(self, values: dict[str, str]) -> None:
        self._put(self.journal.append("params", params={k: str(v) for k, v in values.items()}))

    def set_tags(self, values: dict[str, str]) -> None:
        self._put(self.journal.append("tags", tags={k: str(v) for k, v in values.items()}))

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """Upload a copy kept in the journal (the original may be a temporary file)."""
        artifact_path = uris.artifact_path(artifact_path)  # refused before anything is queued if it escapes the run
        self._put(self.journal.append("artifact", flush=True, file=self.journal.keep_file(local_path),
                                      artifact_path=artifact_path))

    def end(self, status: str) -> None:
        self._put(self.journal.append("end", flush=True, status=status, end_time=int(time.time() * 1000)))

    def _next_batch(self) -> list[dict]:
        with self._cond:
            while not self._items:
                self._cond.wait()
            while not self._waiting and (pause := self._last_send + SEND_INTERVAL - time.monotonic()) > 0:
                self._cond.wait(pause)
            batch = [self._items[0]]
            if batch[0]["op"] in BATCHABLE:
                size = len(batch[0].get("metrics", ()))
                params = dict(batch[0].get("params", {}))
                for record in list(self._items)[1:]:
                    size += len(record.get("metrics", ()))
                    if record["op"] not in BATCHABLE or size > MAX_BATCH or len(batch) >= 50:
                        break
                    # a param again with another value: its own call, so the server keeps the first and refuses it
                    if any(params.get(k, v) != v for k, v in record.get("params", {}).items()):
                        break
                    params.update(record.get("params", {}))
                    batch.append(record)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            self._deliver(batch)
            with self._cond:
                for record in batch:
                    self._items.popleft()
                    self.journal.ack(record["seq"])
                self._sent += len(batch)
                self._last_send = time.monotonic()
                self._cond.notify_all()

    def _deliver(self, batch: list[dict]) -> None:
        """Send a batch, retried with backoff while the server is away. One the server refuses
        (rejection.py) is sent again record by record, item by item, so that only what it refuses is
        dropped: one warning line and the run's REJECTED_TAG say what."""
        delay = 0.2
        while True:
            try:
                self._send(batch)
                self.last_error = None
                return
            except Exception as exc:  # noqa: BLE001 - the server is away or refuses: which, decides
                refused = rejection.reason(exc)
                if refused is None:  # the server is away: keep the batch, try again
                    self.last_error = exc
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
            parts = [[r] for r in batch] if len(batch) > 1 else [[r] for r in rejection.apart(batch[0])]
            if len(parts) == 1:
                self._drop(batch[0], refused)
                return
            for part in parts:
                self._deliver(part)
            return

    def _drop(self, record: dict, refused: str) -> None:
        what = rejection.describe(record)
        print(f"mlflow-dl: the tracking server refused {what} of run {self.run_id}; dropped: {refused}",
              file=sys.stderr)
        if rejection.REJECTED_TAG in record.get("tags", {}):  # the tag itself refused (a deleted run): no more
            return
        self._rejected.append(f"{what}: {refused}")
        text = "; ".join(self._rejected)
        self._put(self.journal.append("tags", tags={rejection.REJECTED_TAG: text[:_REJECTED_CHARS]}))

    def _send(self, batch: list[dict]) -> None:
        first = batch[0]
        if first["op"] not in BATCHABLE:
            run_id = spool.send(self.client, self.run_id, first)
            if run_id != self.run_id:
                self.run_id = run_id
                self.journal.bind(run_id)
            return
        metrics = [Metric(k, v, ts, step) for r in batch for k, v, ts, step in r.get("metrics", ())]
        params = {k: v for r in batch for k, v in r.get("params", {}).items()}
        tags = {k: v for r in batch for k, v in r.get("tags", {}).items()}
        self.client.log_batch(self.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                              tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True)

    def keep_journal(self, delivered: bool) -> None:
        """At the end of a fit: close the journal (deleted once the server has every record) if everything was
        `delivered`, else flush it, still open for the sender's acks, for `mlflow-dl sync`."""
        if delivered:
            self.journal.close()
        else:
            self.journal.flush()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued is on the server; False once `timeout` seconds pass with
        nothing delivered (the server is away or stuck). A slow server that keeps taking records
        is waited for."""
        with self._cond:
            self._waiting += 1
            self._cond.notify_all()
            try:
                deadline = None if timeout is None else time.monotonic() + timeout
                while self._items:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    sent = self._sent
                    self._cond.wait(remaining)
                    if deadline is not None and self._sent != sent:
                        deadline = time.monotonic() + timeout
            finally:
                self._waiting -= 1
        return True
