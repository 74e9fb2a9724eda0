"""SIGTERM and Ctrl-C during a tracked fit: stop after the running batch, so the run can end KILLED.

The handler only takes note and sets `model.stop_training`: it runs between any two bytecodes of
the main thread (inside the journal's lock, inside TensorFlow tracing the train step), where
flushing or raising can deadlock. MlflowCallback ends the run, and raises the KeyboardInterrupt the
signal stands for, at the end of the batch.
"""

from __future__ import annotations

import signal
import threading

import keras


class SignalStop:
    """The signal handlers of one fit, and which signal (if any) came during it."""

    def __init__(self):
        self.received: str | None = None  # the signal's name once SIGTERM / Ctrl-C came during fit
        self._old_handlers: dict = {}  # signal -> the handler it had before fit
        self._steps_before = 0  # the optimizer's steps when the epoch began
        self._model = None

    def install(self, model) -> None:
        """Take SIGTERM and Ctrl-C for this fit (main thread only; an ignored signal stays ignored)."""
        self.received, self._model, self._old_handlers = None, model, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup, a background job
                    self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        """Give SIGTERM and Ctrl-C back to the handlers they had before fit."""
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}

    def epoch_begin(self) -> None:
        self._steps_before = self._steps_taken()

    def epoch_cut(self, steps: int | None) -> bool:
        """Whether the signal stopped the epoch before its last batch (it may also have come after it,
        during validation or the epoch's callbacks: then the epoch is whole)."""
        return not steps or self._steps_taken() - self._steps_before < steps

    def _steps_taken(self) -> int:
        return int(keras.ops.convert_to_numpy(self._model.optimizer.iterations))

    def _on_signal(self, signum, frame):
        """Note the signal, ask Keras to stop at the end of the running batch, then chain to the previous handler.

        A second signal goes to that handler, for a fit that never reaches the end of its batch. An application's
        own handler (a cluster's preemption handler) is called now; Python's default Ctrl-C handler and SIG_DFL are
        not: the KeyboardInterrupt raised once the run is ended KILLED stands for both.
        """
        previous = self._old_handlers.get(signum)
        self.restore()
        self.received = signal.Signals(signum).name
        self._model.stop_training = True
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)
