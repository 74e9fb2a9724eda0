"""The CLI: one-line errors with exit code 2, nothing left RUNNING; a real run through it."""

import subprocess

import mlflow
import numpy as np
import pandas as pd
import pytest

from conftest import all_runs, mlflow_dl_cli
from mlflow_dl.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.fixture
def csvs(tmp_path):
    rng = np.random.default_rng(0)
    ok = pd.DataFrame({"a": rng.normal(size=30), "b": rng.normal(size=30), "y": rng.normal(size=30)})
    paths = {}
    for name, frame in {
        "text": ok.assign(city=["x", "y", "z"] * 10),
        "nans": ok.assign(a=[np.nan] * 3 + list(ok["a"][3:])),
        "tiny": ok.head(3),
        "huge": ok.assign(y=ok["y"] * 1e30),
    }.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        paths[name] = str(tmp_path / f"{name}.csv")
    return paths


BAD = [
    (["--dataset", "missing.csv", "--target", "y"], "dataset='missing.csv': no such file"),
    (["--dataset", "{tiny}", "--target", "price"], "target='price' is not a column"),
    (["--dataset", "{text}", "--target", "y"], "non-numeric feature columns: city"),
    (["--dataset", "{nans}", "--target", "y"], "missing values in columns: a (3)"),
    (["--dataset", "{tiny}", "--target", "y"], "too few for the split"),
    (["--dropout", "1.0"], "dropout=1.0 is invalid; expected a rate in [0, 1)"),
    (["--l1", "-0.1"], "l1=-0.1 is invalid"),
    (["--l2", "-0.1"], "l2=-0.1 is invalid"),
    (["--lr", "-1"], "lr=-1.0 is invalid"),
    (["--hidden", ""], "hidden='' is invalid"),
    (["--epochs", "x"], "Invalid value for '--epochs'"),
    (["--patience", "soon"], "expected an integer >= 0 or 'none'"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input_one_line_exit_2_nothing_running(args, message, csvs, capsys, tracking_store):
    args = [a.format(**csvs) for a in args]
    code, out, err = run_cli(["train", "--epochs", "1", *args] if "--epochs" not in args else ["train", *args], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err + out
    assert [r for r in all_runs() if r.info.status == "RUNNING"] == []


def test_diverging_fit_ends_failed_with_the_reason(csvs, capsys, tracking_store):
    code, _, err = run_cli(["train", "--dataset", csvs["huge"], "--target", "y", "--epochs", "2",
                            "--hidden", "4"], capsys)
    assert code == 2 and "loss became" in err
    (run,) = all_runs()
    assert run.info.status == "FAILED"
    assert "TrainingError: loss became" in run.data.tags["mlflow_dl.error"]


def test_dropna_flag_lets_the_nan_csv_train(csvs, capsys, tracking_store):
    code, out, _ = run_cli(["train", "--dataset", csvs["nans"], "--target", "y", "--dropna", "--epochs", "1",
                            "--hidden", "4"], capsys)
    assert code == 0 and "FINISHED" in out


def test_train_prints_the_logged_model_val_loss_and_its_epoch(capsys, tracking_store):
    """The line names the metric it prints: model_val_loss (what promote ranks) at the epoch whose weights
    the model holds; with --no-restore-best-weights that is the last epoch, not best_epoch."""
    code, out, _ = run_cli(["train", "--epochs", "3", "--hidden", "4", "--l2", "0.01", "--patience", "none",
                            "--no-restore-best-weights"], capsys)
    assert code == 0
    (run,) = all_runs()
    m = run.data.metrics
    assert int(m["model_epoch"]) == 2
    assert out.startswith(f"run {run.info.run_id} FINISHED: model_val_loss={m['model_val_loss']:.4g} at epoch 2; "), out
    assert "best_val_loss" not in out


def test_cli_subprocess_trains_into_the_default_sqlite_store(tmp_path, monkeypatch, no_store):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    proc = subprocess.run([*mlflow_dl_cli(), "train", "--epochs", "2", "--hidden", "8", "--l2", "0.01",
                           "--reg-layers", "widest", "--dropout", "0.2"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "mlflow.db").exists()
    (run,) = all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run.info.status == "FINISHED"
    assert run.data.params["model.dropout"] == "0.2" and run.data.params["model.reg_layers"] == "widest"
    exp = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_experiment(run.info.experiment_id)
    assert exp.name == "mlflow-dl"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.info.run_id in proc.stdout


def test_the_program_exits_with_the_commands_code_after_the_atexit_handlers():
    """`program()` skips the interpreter's teardown, not what Python runs at exit, nor the output."""
    import sys

    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('atexit handler ran', flush=True))\n"
            "sys.argv = ['mlflow-dl', *sys.argv[1:]]\n"
            "from mlflow_dl.cli import program\n"
            "program()\n")
    bad = subprocess.run([sys.executable, "-c", code, "train", "--dropout", "1.5"], capture_output=True, text=True)
    assert (bad.returncode, bad.stderr.strip()) == (2, "error: dropout=1.5 is invalid; expected a rate in [0, 1)")
    assert bad.stdout == "atexit handler ran\n"
    helped = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and helped.stdout.startswith("Usage: mlflow-dl")
    assert helped.stdout.endswith("atexit handler ran\n") and "train" in helped.stdout


@pytest.mark.parametrize("text, seconds", [("45s", 45), ("30m", 1800), (" 2h ", 7200), ("1.5d", 129600)])
def test_reap_older_than_reads_a_number_and_a_unit(text, seconds):
    from mlflow_dl.cli.runs import parse_age

    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["soon", "30", "m", "-1h", "2w"])
def test_reap_older_than_without_a_unit_is_a_config_error(text):
    from mlflow_dl.cli.runs import parse_age
    from mlflow_dl.errors import ConfigError

    with pytest.raises(ConfigError, match=f"older_than={text!r} is invalid"):
        parse_age(text)
