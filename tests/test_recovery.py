"""The trainer goes away: SIGTERM ends the run KILLED; SIGKILL, then `mlflow-dl resume`; `mlflow-dl reap`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import mlflow
import pytest

from conftest import all_runs, mlflow_dl_cli

TRAIN = ["train", "--epochs", "10", "--patience", "none", "--batch-size", "1", "--hidden", "8", "--run-name", "long"]


def _start_and_wait_for_step(tmp_path, step: int):
    """`mlflow-dl train` in a subprocess; returns it and its run id once `step` is logged."""
    proc = subprocess.Popen(mlflow_dl_cli() + TRAIN, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    client = mlflow.MlflowClient()
    deadline = time.time() + 180
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        runs = all_runs()
        if runs and max((m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")), default=-1) >= step:
            return proc, runs[0].info.run_id
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"step {step} never logged")


def _steps(run_id, key="loss"):
    return sorted(m.step for m in mlflow.MlflowClient().get_metric_history(run_id, key))


def test_sigterm_ends_the_run_killed_with_its_metrics(tmp_path):
    proc, run_id = _start_and_wait_for_step(tmp_path, 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "KILLED" and run.info.end_time
    assert "SIGTERM" in run.data.tags["mlflow_dl.error"]
    logged = _steps(run_id)
    assert logged == list(range(len(logged))) and len(logged) >= 2  # every epoch up to the signal, once


@pytest.mark.slow
@pytest.mark.parametrize("torn", [False, True], ids=["between-epochs", "while-writing-the-state"])
def test_sigkill_at_epoch_3_then_resume_continues_the_same_run(tmp_path, torn):
    proc, run_id = _start_and_wait_for_step(tmp_path, 3)
    proc.kill()
    proc.communicate()
    logged_at_kill = max(_steps(run_id))
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "RUNNING"
    backup = run.data.tags["mlflow_dl.backup_dir"]
    saved_epoch = json.load(open(os.path.join(backup, "training_metadata.json")))["epoch"]  # epochs completed
    assert logged_at_kill + 1 - saved_epoch <= 1  # at most one epoch is recomputed
    if torn:  # what a kill in the middle of writing the epoch's weights leaves: resume uses the state before it
        with open(os.path.join(backup, "latest.weights.h5"), "r+b") as f:
            f.truncate(100)

    out = subprocess.run(mlflow_dl_cli() + ["resume", run_id], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = all_runs()
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    for key in ("loss", "val_loss"):
        assert _steps(run_id, key) == list(range(10))
    assert run.data.metrics["stopped_epoch"] == 9
    m = run.data.metrics  # the line names the resumed run's logged model_val_loss and the epoch it holds
    assert f"FINISHED: model_val_loss={m['model_val_loss']:.4g} at epoch {int(m['model_epoch'])}; " in out.stdout
    assert not os.path.exists(backup)  # a fit that ends normally removes its epoch state
    client = mlflow.MlflowClient()
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/best.keras"]

    again = subprocess.run(mlflow_dl_cli() + ["resume", run_id], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 2 and "FINISHED" in again.stderr


def test_reap_kills_only_runs_without_a_recent_heartbeat(tmp_path):
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("e")
    now = int(time.time() * 1000)
    stale = client.create_run(experiment, tags={"mlflow_dl.heartbeat": str(now - 45 * 60_000)}).info.run_id
    alive = client.create_run(experiment, tags={"mlflow_dl.heartbeat": str(now - 60_000)}).info.run_id
    out = subprocess.run(mlflow_dl_cli() + ["reap", "--older-than", "30m"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "1 runs reaped" in out.stdout, out.stderr[-2000:]
    assert client.get_run(stale).info.status == "KILLED" and client.get_run(stale).info.end_time
    assert "no heartbeat" in client.get_run(stale).data.tags["mlflow_dl.error"]
    assert client.get_run(alive).info.status == "RUNNING"
    bad = subprocess.run(mlflow_dl_cli() + ["reap", "--older-than", "soon"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "older_than='soon'" in bad.stderr


@pytest.mark.parametrize("command", ["resume", "diagnose"])
def test_an_unknown_run_id_is_one_line_exit_2(command, capsys, tracking_store):
    from mlflow_dl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "0123456789abcdef0123456789abcdef"])
    err = capsys.readouterr().err  # (MLflow's own INFO lines about creating the fresh store come first)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert "run_id='0123456789abcdef0123456789abcdef' is not a run of the tracking store" in errors[0]
    assert all_runs() == []


def test_ctrl_c_while_a_run_is_being_started_ends_it_killed(monkeypatch, tracking_store):
    """A Ctrl-C between MLflow creating a run and handing it back must not leave it RUNNING."""
    import signal

    from mlflow_dl.delivery import runs

    real_start_run = mlflow.start_run

    def start_run_then_ctrl_c(*args, **kwargs):  # the real MLflow call, then the user's Ctrl-C
        run = real_start_run(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)
        return run

    monkeypatch.setattr(mlflow, "start_run", start_run_then_ctrl_c)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own Ctrl-C, whatever ran before
    try:
        with pytest.raises(KeyboardInterrupt):
            with runs.tracked_run("train"):
                pytest.fail("the body must not run after a Ctrl-C")
    finally:
        signal.signal(signal.SIGINT, previous)
    (run,) = all_runs()
    assert run.info.status == "KILLED"
