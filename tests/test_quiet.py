"""Quiet by default: the CLI's processes print their own lines, not TensorFlow's start-up or MLflow's INFO lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import mlflow_dl_cli
from mlflow_dl import quiet

# what TensorFlow 2.21 prints while it loads on a machine without a GPU, as a user saw it
STARTUP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796103248.056488   11310 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796103248.058080   11310 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796103278.358302   11639 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1796103282.409231   11639 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""
# any line of absl's format (I/W/E/F, then MMDD), absl's pre-init warning, MLflow's and alembic's INFO lines
NOISE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN custom operations|Could not find cuda drivers|cuInit"
                   r"|INFO mlflow|INFO  \[alembic|Creating initial MLflow database tables|Downloading artifacts", re.M)


def test_known_startup_lines_go_and_everything_else_stays():
    mine = "error: something the user must see\n/x.py:3: UserWarning: a warning\n"
    assert quiet.kept_lines(STARTUP + mine) == mine
    # with a CUDA driver present, a failing cuInit is an error worth seeing
    with_driver = "\n".join(line for line in STARTUP.splitlines() if "cuda drivers" not in line) + "\n"
    assert quiet.kept_lines(with_driver) == with_driver.splitlines(keepends=True)[-1]


def test_filtered_stderr_drops_the_noise_written_to_fd_2_and_passes_the_rest():
    code = ("import os, sys\nfrom mlflow_dl import quiet\n"
            "with quiet.filtered_stderr():\n"
            f"    os.write(2, {STARTUP.encode()!r})\n"
            "    os.write(2, b'C++ says: a real problem\\n')\n"
            "    print('python says: a warning', file=sys.stderr)\n"
            "print('after', file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stderr == "C++ says: a real problem\npython says: a warning\nafter\n"


def _train(folder, *extra, env=None):
    # as a user's shell has it: without the settings a CLI command run in this process may have left here
    clean = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_LOGGING_LEVEL", quiet.VERBOSE_ENV)}
    return subprocess.run([*mlflow_dl_cli(), *extra, "train", "--epochs", "1", "--hidden", "4"], capture_output=True,
                          text=True, cwd=folder, timeout=600,
                          env={**clean, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'fresh.db'}", **(env or {})})


def test_train_prints_its_own_lines_only_and_verbose_shows_the_rest(tmp_path):
    proc = _train(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not NOISE.search(proc.stdout + proc.stderr), proc.stderr
    assert re.fullmatch(r"run \w{32} FINISHED: model_val_loss=.* at epoch 0; .*\n", proc.stdout)
    (tmp_path / "loud").mkdir()
    loud = _train(tmp_path / "loud", "--verbose")  # a new store again: MLflow creates its tables and says so
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert "absl::InitializeLog" in loud.stderr and "Creating initial MLflow database tables" in loud.stderr
    assert "absl::InitializeLog" in _train(tmp_path, env={quiet.VERBOSE_ENV: "1"}).stderr


@pytest.mark.slow
def test_sweep_workers_start_quietly(tmp_path):
    proc = subprocess.run([*mlflow_dl_cli(), "sweep", "dropout", "--rates", "0,0.5", "--workers", "2", "--epochs", "1",
                           "--hidden", "4"], capture_output=True, text=True, cwd=tmp_path, timeout=900,
                          env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not NOISE.search(proc.stdout + proc.stderr), proc.stderr
    assert "trial 2/2" in proc.stderr

