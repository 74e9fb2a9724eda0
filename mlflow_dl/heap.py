"""Keeping what a process has loaded out of Python's garbage collection while models train.

With TensorFlow, MLflow and pandas loaded, a full collection scans hundreds of thousands of
long-lived objects: 0.2-0.5 s on 2 cores, as long as a short fit. keras-tuner runs one before
every trial, and Python's own collector runs one every few fits, at a moment set by how many
objects survived since the last. Frozen, a collection scans only what the fits create.
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


def hold() -> bool:
    """For one fit: freeze what is alive now, without collecting first (gc.freeze alone costs
    nothing), unless the heap is frozen already (a sweep or a worker froze it). True when this
    call froze it: the caller then unfreezes it after the fit."""
    if gc.get_freeze_count():
        return False
    gc.freeze()
    return True
