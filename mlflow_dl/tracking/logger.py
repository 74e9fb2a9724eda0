"""Metric and param batches sent from a background thread, so `fit` never waits on the tracking server.

One daemon thread per fit coalesces whatever is queued into `log_batch` calls
(at most MLflow's 1,000 metrics each). A failed call is retried with backoff
and nothing queued is dropped; `flush` waits for the queue to drain, bounded by
a timeout, and reports what could not be sent.
"""

from __future__ import annotations

import queue
import threading
import time

from mlflow.entities import Metric, Param

MAX_BATCH = 1000


class BackgroundLogger:
    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._lock = threading.Condition()
        self.last_error: Exception | None = None
        self._thread = threading.Thread(target=self._loop, name="mlflow-dl-logger", daemon=True)
        self._thread.start()

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            self._pending += 1
        self._queue.put([Metric(k, float(v), now, step) for k, v in values.items()])

    def log_params(self, values: dict[str, str]) -> None:
        with self._lock:
            self._pending += 1
        self._queue.put([Param(k, str(v)) for k, v in values.items()])

    def _loop(self) -> None:
        while True:
            batch = self._queue.get()
            taken = 1
            while len(batch) < MAX_BATCH:  # coalesce what else is waiting
                try:
                    batch = batch + self._queue.get_nowait()
                    taken += 1
                except queue.Empty:
                    break
            for start in range(0, len(batch), MAX_BATCH):
                self._send(batch[start:start + MAX_BATCH])
            with self._lock:
                self._pending -= taken
                self._lock.notify_all()

    def _send(self, entities: list) -> None:
        metrics = [e for e in entities if isinstance(e, Metric)]
        params = [e for e in entities if isinstance(e, Param)]
        delay = 0.2
        while True:
            try:
                self.client.log_batch(self.run_id, metrics=metrics, params=params, synchronous=True)
                self.last_error = None
                return
            except Exception as exc:  # the server is away: keep the batch, try again
                self.last_error = exc
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued is on the server; False if the timeout came first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True
