"""Keeping what a process has loaded out of Python's garbage collection while trials run.

With TensorFlow, MLflow and pandas loaded, a full collection scans millions of long-lived
objects: ~0.5 s on 2 cores, as long as a short trial's fit. keras-tuner runs one before every
trial, and Python's own collector runs one every few trials. Frozen, a collection scans only
what the trials create.
"""

from __future__ import annotations

import contextlib
import gc


def freeze() -> None:
    """Collect once, then move every object alive now out of the collector's reach."""
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def frozen():
    """freeze() for the block; unfrozen afterwards, so the caller's process is as it was."""
    freeze()
    try:
        yield
    finally:
        gc.unfreeze()
