"""Keeping what a process has loaded out of Python's garbage collection while models train.

With TensorFlow, MLflow and pandas loaded, a full collection (keras-tuner runs one per trial) scans hundreds of
thousands of long-lived objects; frozen, it scans only what the fits create. Only in a process mlflow-dl owns
(process.own()): in a user's process everything here does nothing, as `gc.unfreeze()` would undo the host's own.
"""

from __future__ import annotations

import contextlib
import gc

from mlflow_dl.runtime import process

# whether this module froze the heap; gc.get_freeze_count() would tell too, but it walks every
# frozen object, once per fit
_frozen = False
_for_good = False  # the process exits when its command ends (the `mlflow-dl` program): let_go() keeps the freeze
_thresholds: tuple | None = None  # Python's collection thresholds, for hold() to restore after collect_less_often()


def collect_less_often() -> None:
    """While a process loads its libraries, until hold(): collect 70x less often. TensorFlow, MLflow and
    pandas make hundreds of thousands of objects that last and almost no garbage, yet at Python's
    default thresholds each full collection rescans the growing heap while they load, a share of
    every command's start. Once the heap is held, what is loaded is frozen already: nothing to do (a
    Ray worker process initialised again for another sweep would otherwise keep the raised thresholds)."""
    global _thresholds
    if _thresholds is None and not _frozen and process.owned():
        _thresholds = gc.get_threshold()
        gc.set_threshold(50_000, *_thresholds[1:])


def hold() -> bool:
    """Freeze what is alive now, without collecting first (gc.freeze alone costs nothing; a full
    collection first would cost what freezing saves), unless the heap is frozen already (by a
    sweep, a search or a worker). True when this call froze it: the caller then calls let_go(), unless
    the process only runs trials (a worker), whose heap stays frozen for good."""
    global _frozen, _thresholds
    if _frozen or not process.owned():
        return False
    gc.freeze()
    _frozen = True
    if _thresholds is not None:  # what is loaded is frozen: Python's own pace again for the work's garbage
        gc.set_threshold(*_thresholds)
        _thresholds = None
    return True


def take_in() -> None:
    """While held: freeze what was made since as well, before trials leave garbage to keep. A sweep's
    parent run is the first call to a fresh store, whose engine and schema would otherwise be
    rescanned by every full collection during the trials."""
    if _frozen:
        gc.freeze()


def for_good() -> None:
    """For a process that exits when its command ends: what gets frozen stays frozen. Let go, the
    frozen objects (all that TensorFlow and MLflow loaded) would be scanned by Python's next full
    collection, just before the process exits."""
    global _for_good
    _for_good = True


def let_go() -> None:
    """Undo hold(): the frozen objects are the collector's again. Frozen for good, they stay frozen,
    and what the block left is collected now (the trials' models), so that a
    later take_in() (the main job's next sweep) cannot freeze it for good too."""
    global _frozen
    if _for_good:
        gc.collect()
        return
    gc.unfreeze()
    _frozen = False


@contextlib.contextmanager
def frozen():
    """hold() for the block (a sweep, a search); let go afterwards, so the caller's process is as it was."""
    froze = hold()
    try:
        yield
    finally:
        if froze:
            let_go()
