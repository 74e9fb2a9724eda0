"""What mlflow-dl's own processes keep off the terminal: TensorFlow's start-up lines and MLflow's INFO lines.

Only in mlflow-dl's own processes (the CLI, its workers, `mlflow run` entry points), unless `--verbose` or
MLFLOW_DL_VERBOSE=1; a user's process keeps its own settings. TensorFlow prints start-up lines through absl
before TF_CPP_MIN_LOG_LEVEL applies, so `import tensorflow` and the first device look run with fd 2 redirected
and only the known start-up lines are dropped (cuInit's failure only where no CUDA driver was found).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys

VERBOSE_ENV = "MLFLOW_DL_VERBOSE"
_YES = ("1", "true", "yes", "on")

# known start-up lines of TensorFlow's libraries (absl's prefix "I0000 00:00:... file.cc:N] " before them)
STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|^To enable the following instructions: .* rebuild TensorFlow"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|computation placer already registered")
NO_DRIVER = re.compile(r"Could not find cuda drivers on your machine")
CUINIT = re.compile(r"failed call to cuInit")


def verbose() -> bool:
    """Whether the user asked for TensorFlow's and MLflow's own lines (MLFLOW_DL_VERBOSE=1)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in _YES


def own_process() -> None:
    """For a process mlflow-dl owns (the CLI, a sweep worker): quiet unless verbose. The environment
    carries the choice to the processes it starts (workers, `mlflow models serve`)."""
    if verbose():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    # MLflow 3.17 draws a "Downloading artifacts" bar for each file a logged model copies: two per fit
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)  # the store's schema migrations
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())


def kept_lines(text: str) -> str:
    """What of a start-up's stderr still goes to the user: all but the known start-up lines."""
    lines = text.splitlines(keepends=True)
    no_driver = any(NO_DRIVER.search(line) for line in lines)
    return "".join(line for line in lines
                   if not STARTUP_NOISE.search(line) and not (no_driver and CUINIT.search(line)))


@contextlib.contextmanager
def filtered_stderr():
    """File descriptor 2 (C++'s stderr and Python's alike) into a temporary file for the block; then
    `kept_lines` of it to the real stderr. A file, not a pipe: nothing can block on a full pipe."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = kept_lines(sink.read().decode("utf-8", "replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class _QuietLoader:
    """TensorFlow's own loader, run inside `filtered_stderr`, then its first look at the devices."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader  # nothing later sees this wrapper
        with filtered_stderr():
            self.loader.exec_module(module)
            try:  # CUDA's cuInit runs here; no TensorFlow context is made (threads can still be set)
                module.config.list_physical_devices()
            except Exception:  # noqa: BLE001 - a TensorFlow without it: its first op looks instead
                pass


class _QuietTensorFlow:
    """Whoever imports tensorflow first (Keras, MLflow, keras-tuner), it loads through _QuietLoader."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec
