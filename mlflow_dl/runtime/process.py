"""Whether mlflow-dl owns this process.

The `mlflow-dl` program (and so every `mlflow run` entry point) and its sweep workers are mlflow-dl's
own processes: they may tune process-wide state (heap.py's garbage-collector freeze, tf_runtime's
workarounds in Keras' and TensorFlow's globals). Any other process is a user's (a notebook, a script
calling autolog, MlflowCallback or the Python API): there nothing process-wide outlives a fit.
"""

from __future__ import annotations

_owned = False


def own() -> None:
    """Claim this process for mlflow-dl: called first thing by the CLI's program and by each worker."""
    global _owned
    _owned = True


def owned() -> bool:
    return _owned
