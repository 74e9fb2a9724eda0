"""Telling a record the tracking server refuses from a server that is away.

A 4xx about the request itself (INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST) would be refused again, so
the record is dropped, said once and tagged. Everything else (connection errors, timeouts, 5xx, 429, 401/403,
a missing endpoint) may pass later: retried, and kept in the journal meanwhile.
"""

from __future__ import annotations

REJECTED_TAG = "mlflow_dl.rejected"  # what the server refused, on the run it was for
_NOT_THE_RECORDS_FAULT = {401, 403, 408, 429, 499}
_TRANSIENT_CODES = {"ABORTED", "ENDPOINT_NOT_FOUND"}
_REASON_CHARS = 200


def reason(exc: BaseException) -> str | None:
    """The server's reason when it refused the request for what it holds; None for a failure worth retrying."""
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException) or exc.error_code in _TRANSIENT_CODES:
        return None
    status = exc.get_http_status_code()
    if not 400 <= status < 500 or status in _NOT_THE_RECORDS_FAULT:
        return None
    text = " ".join(str(exc.message).split())  # one line
    if not text.startswith(exc.error_code):
        text = f"{exc.error_code}: {text}"
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def describe(record: dict) -> str:
    """What a journal record holds, shortly: `param learning_rate`, `metrics loss, val_loss at step 3`."""
    op = record["op"]
    if op == "params":
        return "param " + ", ".join(record["params"])
    if op == "tags":
        return "tag " + ", ".join(record["tags"])
    if op == "metrics":
        keys = sorted({k for k, *_ in record["metrics"]})
        steps = sorted({step for *_, step in record["metrics"]})
        what = "metric " + ", ".join(keys) + (f" at step {steps[0]}" if len(steps) == 1 else "")
        return what + (" and tag " + ", ".join(record["tags"]) if record.get("tags") else "")
    return f"{op} record"


def apart(record: dict) -> list[dict]:
    """A record with several items as one record per item (so one refused item does not take the others
    with it); [record] when it holds one."""
    op = record["op"]
    if op in ("params", "tags"):
        items = [{**record, op: {k: v}} for k, v in record[op].items()]
    elif op == "metrics":
        items = [{**record, "metrics": [row], "tags": {}} for row in record["metrics"]]
        items += [{**record, "metrics": [], "tags": {k: v}} for k, v in record.get("tags", {}).items()]
    else:
        items = [record]
    return items if len(items) > 1 else [record]
