"""`import mlflow_dl` and every `--help` must not import tensorflow (nor mlflow)."""

import subprocess
import sys

import pytest

COMMANDS = [[], ["train"], ["main"], ["promote"], ["serve"], ["tune"], ["server"], ["sync"], ["resume"], ["reap"], ["sweep", "multi_input"], ["sweep", "pca"],
            ["rnn-vs-lstm"], ["sweep", "rnn_vs_lstm"], ["diagnose"], ["refine"]]


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


def test_the_data_modules_load_without_tensorflow_keras_or_mlflow():
    """Checking a CSV, a series or the feature groups needs pandas, not TensorFlow: data errors come first."""
    code = ("import pkgutil, importlib, sys, mlflow_dl.data as d\n"
            "names = [m.name for m in pkgutil.iter_modules(d.__path__)]\n"
            "for name in names: importlib.import_module(f'mlflow_dl.data.{name}')\n"
            "import mlflow_dl.sweeps.search_plan, mlflow_dl.families, mlflow_dl.config\n"
            "print(len(names), [m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(maxsplit=1)
    assert int(out[0]) >= 7 and out[1].strip() == "[]"
