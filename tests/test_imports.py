"""`import mlflow_dl` and every `--help` must not import tensorflow (nor mlflow)."""

import subprocess
import sys

import pytest

COMMANDS = [[], ["train"], ["main"], ["promote"], ["serve"], ["tune"], ["server"], ["sync"], ["resume"], ["reap"], ["sweep", "multi_input"], ["sweep", "pca"],
            ["rnn-vs-lstm"], ["sweep", "rnn_vs_lstm"], ["diagnose"]]


def test_import_mlflow_dl_leaves_tensorflow_unimported():
    code = "import sys, mlflow_dl; print('tensorflow' in sys.modules, 'keras' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help_leaves_tensorflow_unimported(command):
    code = (
        "import sys\nfrom mlflow_dl.cli import main\n"
        f"try:\n    main({command + ['--help']!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print('HEAVY', 'tensorflow' in sys.modules or 'mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Usage:" in out
    assert out.strip().splitlines()[-1] == "HEAVY False"
