"""Bad input fails fast: every command's bad-input case, run as the `mlflow-dl` program in a subprocess,
ends with exactly one line on stderr, exit code 2, and TensorFlow never imported."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

# the program as `mlflow-dl` runs it; at exit (program() runs the atexit handlers) the heavy modules
# this process imported are written to the file named first
WRAPPER = (
    "import atexit, json, sys\n"
    "report = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(report, 'w').write(json.dumps(\n"
    "    [m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules])))\n"
    "sys.argv[0] = 'mlflow-dl'\n"
    "from mlflow_dl.cli import program\n"
    "program()\n"
)


def run_program(args: list[str], cwd, env=None) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The program's outcome and the heavy modules it imported."""
    report = cwd / "imported.json"
    report.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-c", WRAPPER, str(report), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)
    return proc, json.loads(report.read_text())


def make_files(tmp_path):
    """The bad inputs a user brings: CSVs with one problem each, a series with bad dates, a search space."""
    rng = np.random.default_rng(0)
    ok = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40), "y": rng.normal(size=40)})
    ok.to_csv(tmp_path / "ok.csv", index=False)
    ok.assign(city=["x", "y"] * 20).to_csv(tmp_path / "text.csv", index=False)
    ok.assign(a=[np.nan] * 3 + list(ok["a"][3:])).to_csv(tmp_path / "nans.csv", index=False)
    (tmp_path / "broken.csv").write_bytes(b'a,b,y\n1,2,3\n"4,5\n6,7,8,9,10\n')
    series = ok.assign(date=pd.date_range("2020-01-01", periods=40, freq="D").astype(str))
    series.loc[[5, 6], "date"] = ["not a date", "2020-13-45"]
    series.to_csv(tmp_path / "dates.csv", index=False)
    (tmp_path / "space.yaml").write_text("nodes: {min: 16, max: 128}\nwidth: 3\n")
    return tmp_path


@pytest.fixture
def files(tmp_path):
    return make_files(tmp_path)


# (command line, what its one line says); {dir} is the folder with `files`
CASES = [
    (["train", "--dataset", "{dir}/missing.csv", "--target", "y"], "no such file"),
    (["train", "--dataset", "{dir}/ok.csv", "--target", "price"], "target='price' is not a column"),
    (["train", "--dataset", "{dir}/nans.csv", "--target", "y"], "missing values in columns: a (3)"),
    (["train", "--dataset", "{dir}/text.csv", "--target", "y"], "non-numeric feature columns: city"),
    (["train", "--dataset", "{dir}/broken.csv", "--target", "y"], "is not a readable CSV"),
    (["train", "--dataset", "mnist"], "dataset='mnist': no such file"),
    (["train", "--dropout", "1.0"], "dropout=1.0 is invalid"),
    (["main", "--epochs", "0"], "epochs=0 is invalid"),
    (["sweep", "regularization", "--strengths", "-1"], "is invalid"),
    (["sweep", "dropout", "--rates", "0,1.5"], "is invalid"),
    (["sweep", "dropout", "--dataset", "{dir}/nans.csv", "--target", "y"], "missing values in columns: a (3)"),
    (["sweep", "capacity", "--layers", "0"], "is invalid"),
    (["sweep", "early_stopping", "--patience", "-1"], "is invalid"),
    (["sweep", "learning_rate", "--lrs", "0"], "is invalid"),
    (["sweep", "data_size", "--fractions", "2"], "is invalid"),
    (["sweep", "multi_input", "--groups", "nomatch*"], "nomatch*"),
    (["sweep", "pca", "--components", "100"], "components=100"),
    (["sweep", "rnn_vs_lstm", "--cells", "transformer"], "transformer"),
    (["rnn-vs-lstm", "--dataset", "{dir}/dates.csv", "--date-column", "date", "--target", "y"], "date"),
    (["rnn-vs-lstm", "--timesteps", "5000"], "timesteps"),
    (["rnn-vs-lstm", "--dataset", "nile"], "nile"),
    (["tune", "--space", "{dir}/space.yaml"], "width"),
    (["tune", "--dataset", "{dir}/text.csv", "--target", "y"], "non-numeric feature columns: city"),
    (["tune", "--model", "recurrent", "--dataset", "{dir}/dates.csv", "--date-column", "date", "--target", "y"], "date"),
    (["promote", "--experiment", "no-such-experiment", "--model-name", "m"], "no-such-experiment"),
    (["diagnose", "0123456789abcdef0123456789abcdef"], "0123456789abcdef0123456789abcdef"),
    (["serve", "--model-name", "no-such-model"], "no-such-model"),
    (["resume", "0123456789abcdef0123456789abcdef"], "0123456789abcdef0123456789abcdef"),
    (["reap", "--older-than", "soon"], "older_than='soon'"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_input_one_line_exit_2_without_tensorflow(args, message, files):
    proc, imported = run_program([a.format(dir=files) for a in args], files)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr[-3000:]
    assert message in proc.stderr
    assert imported == []
