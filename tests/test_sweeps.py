"""Sweep families end to end on tiny data against a real SQLite store."""

import gc
import io
import os
import signal
import subprocess
import time

import mlflow
import numpy as np
import pandas as pd
import pytest

from conftest import all_runs, mlflow_dl_cli
from mlflow_dl.cli import main
from mlflow_dl.config import FitSpec, ModelSpec
from mlflow_dl.families import sweep

TINY = dict(model=ModelSpec(hidden="8"), fit=FitSpec(epochs=2, patience=None))

FAMILIES = [
    ("regularization", {"kind": "both", "strengths": "0.001,0.1"}, {"l1=0.001", "l1=0.1", "l2=0.001", "l2=0.1"}),
    ("dropout", {"rates": "0,0.4"}, {"dropout=0", "dropout=0.4"}),
    ("capacity", {"layers": "1,2", "nodes": "4"}, {"1x4", "2x4"}),
    ("early_stopping", {"patience": "0", "min_delta": "0,0.01", "restore": "on"}, {"p=0,d=0,restore", "p=0,d=0.01,restore"}),
    ("learning_rate", {"lrs": "0.01,0.001"}, {"lr=0.01", "lr=0.001"}),
    ("data_size", {"fractions": "0.3,1"}, {"rows=0.3", "rows=1"}),
]


def children_of(parent_id):
    return [r for r in all_runs() if r.data.tags.get("mlflow.parentRunId") == parent_id]


def artifacts(run_id):
    return {f.path for f in mlflow.MlflowClient().list_artifacts(run_id)} | {
        f.path for f in mlflow.MlflowClient().list_artifacts(run_id, "plots")}


@pytest.mark.parametrize("family, grid, names", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_family_parent_children_table_plots_best(family, grid, names, tracking_store):
    result = sweep(family, progress=False, **TINY, **grid)
    assert gc.get_freeze_count() == 0  # the heap frozen during the trials is the caller's again
    client = mlflow.MlflowClient()
    parent = client.get_run(result.parent_run_id)
    kids = children_of(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["mlflow_dl.family"] == family
    assert {k.info.run_name for k in kids} == names
    assert all(k.info.status == "FINISHED" and k.data.tags["mlflow_dl.family"] == family for k in kids)
    # the compare view: every child has the same param keys
    assert len({frozenset(k.data.params) for k in kids}) == 1
    # the table equals the children's metrics
    table = pd.read_csv(io.StringIO(open(mlflow.artifacts.download_artifacts(
        run_id=result.parent_run_id, artifact_path="results.csv")).read()))
    by_id = {k.info.run_id: k for k in kids}
    assert set(table["run_id"]) == set(by_id)
    for _, row in table.iterrows():
        m = by_id[row["run_id"]].data.metrics
        assert row["best_val_loss"] == pytest.approx(m["best_val_loss"])
        assert row["model_val_loss"] == pytest.approx(m["model_val_loss"])
        assert row["best_epoch"] == m["best_epoch"]
        assert row["train_loss_at_best"] == pytest.approx(m["best_epoch_loss"])
        assert row["test_accuracy"] == pytest.approx(m["test_accuracy"])
    best_loss = min(k.data.metrics["model_val_loss"] for k in kids)  # (ties go to the earlier trial)
    assert parent.data.tags["best_run_id"] == result.best_run_id
    assert by_id[result.best_run_id].data.metrics["model_val_loss"] == best_loss
    assert len({k.data.tags["mlflow_dl.comparability_key"] for k in kids}) == 1  # one data set, one split
    assert parent.data.metrics["n_trials"] == len(names) and parent.data.metrics["n_failed"] == 0
    assert {"results.csv", "plots/loss_vs_swept_value.png", "plots/val_loss_curves.png"} <= artifacts(result.parent_run_id)


def test_capacity_knee_is_found_and_logged(tracking_store):
    """The parent logs knee_total_params: kneed's elbow (convex, decreasing) of the trials' best_val_loss
    along log10 of their trainable parameters, recomputed here from what the children logged."""
    from kneed import KneeLocator

    result = sweep("capacity", progress=False, layers="1", nodes="1,2,4,16,64",
                   model=ModelSpec(hidden="8"), fit=FitSpec(epochs=3, patience=None, lr=0.05))
    parent = mlflow.get_run(result.parent_run_id)
    kids = sorted(children_of(result.parent_run_id), key=lambda k: k.data.metrics["total_params"])
    assert [k.info.status for k in kids] == ["FINISHED"] * 5
    params = [k.data.metrics["total_params"] for k in kids]
    assert params == [32 * n + 1 for n in (1, 2, 4, 16, 64)]  # breast_cancer's 30 inputs -> n -> 1
    losses = [k.data.metrics["best_val_loss"] for k in kids]
    elbow = KneeLocator(np.log10(params), losses, curve="convex", direction="decreasing").knee
    assert elbow is not None and params[0] < 10 ** elbow < params[-1], (params, losses)  # the premise: an inner elbow
    assert parent.data.metrics["knee_total_params"] == round(10 ** elbow), (params, losses)  # a tried capacity


def test_knee_is_the_elbow_of_a_known_curve():
    from mlflow_dl.sweeps.compare import knee

    params = np.log10([10, 100, 1_000, 10_000, 100_000])
    assert knee(params, [1.0, 0.30, 0.25, 0.24, 0.235], "decreasing") == pytest.approx(2.0)  # 100 params
    assert knee(params, [1.0, 0.9, 0.8, 0.7, 0.6], "decreasing") is None  # a straight line has no elbow
    assert knee(params[:2], [1.0, 0.3], "decreasing") is None  # too few points to tell


def test_a_failing_trial_ends_failed_and_the_sweep_goes_on(tracking_store):
    result = sweep("regularization", progress=False, kind="l1", strengths="0.001,1e38", **TINY)
    kids = {k.info.run_name: k for k in children_of(result.parent_run_id)}
    assert kids["l1=0.001"].info.status == "FINISHED"
    assert kids["l1=1e+38"].info.status == "FAILED"
    assert "loss became" in kids["l1=1e+38"].data.tags["mlflow_dl.error"]
    parent = mlflow.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["n_failed"] == 1 and parent.data.tags["best_run_id"] == kids["l1=0.001"].info.run_id


def test_two_workers_give_the_inline_results(tracking_store):
    inline = sweep("dropout", progress=False, rates="0,0.3", **TINY)
    workers = sweep("dropout", progress=False, rates="0,0.3", workers=2, **TINY)
    a = inline.table.set_index("trial")["best_val_loss"]
    b = workers.table.set_index("trial")["best_val_loss"]
    np.testing.assert_allclose(a.sort_index(), b.sort_index(), rtol=1e-4)
    assert len(children_of(workers.parent_run_id)) == 2


def test_a_new_sqlite_store_gets_its_schema_before_the_workers_start(no_store, tmp_path):
    """Two processes creating MLflow's tables in one new SQLite file collide ("table _alembic_tmp_... already
    exists"): the sweep's own process makes them before its workers, still importing TensorFlow, connect."""
    import sqlite3

    from mlflow_dl.config import DataSpec
    from mlflow_dl.sweeps import executors

    pool = executors.start_workers(DataSpec(), "mlflow_dl.families.dropout", 2)
    try:
        with sqlite3.connect(tmp_path / "mlflow.db") as db:
            tables = {name for (name,) in db.execute("select name from sqlite_master where type = 'table'")}
        assert {"alembic_version", "experiments", "runs"} <= tables
    finally:
        pool.shutdown(wait=True)


@pytest.mark.parametrize("args, message", [
    (["dropout", "--rates", ""], "rates='' is invalid; expected a non-empty"),
    (["dropout", "--rates", "0,1.0"], "dropout=1.0 is invalid; expected a rate in [0, 1)"),
    (["regularization", "--strengths", "0.1,-1"], "l1=-1.0 is invalid"),
    (["data_size", "--fractions", "0,1"], "fractions=0.0 is invalid"),
    (["capacity", "--nodes", "x"], "nodes='x' is invalid"),
    (["nope"], "No such command 'nope'"),
])
def test_bad_grids_one_line_exit_2_nothing_started(args, message, capsys, tracking_store):
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", *args, "--epochs", "1"] if args != ["nope"] else ["sweep", "nope"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err
    assert all_runs() == []


@pytest.mark.slow
def test_ctrl_c_kills_the_running_child_and_the_parent_keeps_the_table(tmp_path, tracking_store):
    """Ctrl-C once the first trial has finished and the second has logged an epoch. The first trial stops
    after 2 epochs (patience 0, and no epoch can improve val_loss by 10); the second cannot end before the
    Ctrl-C (patience and epochs far beyond what the test waits for), whatever the machine's load."""
    proc = subprocess.Popen([*mlflow_dl_cli(), "sweep", "early_stopping", "--patience", "0,1000000",
                             "--min-delta", "10", "--restore", "on", "--epochs", "1000000", "--hidden", "8"],
                            cwd=tmp_path, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            # as a terminal starts it: Ctrl-C not ignored, whatever this test process inherited
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    client = mlflow.MlflowClient()

    def second_trial_is_training():
        children = [r for r in all_runs() if "mlflow.parentRunId" in r.data.tags]
        running = [r for r in children if r.info.status == "RUNNING"]
        return any(r.info.status == "FINISHED" for r in children) and len(running) == 1 and \
            bool(client.get_metric_history(running[0].info.run_id, "loss"))

    deadline = time.time() + 300
    try:
        while not second_trial_is_training():
            assert proc.poll() is None and time.time() < deadline, "the second trial never started training"
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # the Ctrl-C did not take: do not leave a million epochs running
            proc.kill()
    runs = all_runs()
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    statuses = sorted(r.info.status for r in runs if "mlflow.parentRunId" in r.data.tags)
    said = f"exit {proc.returncode}, children {statuses}, stderr:\n{err.decode()[-3000:]}"
    assert parent.info.status == "KILLED", said
    assert statuses == ["FINISHED", "KILLED"], said
    assert proc.returncode == 130, said
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="results.csv"))
    assert list(table["status"]) == ["FINISHED"]


@pytest.mark.slow
def test_standalone_family_project_through_mlflow_run(tracking_store):
    from conftest import REPO
    import sys

    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_store}
    proc = subprocess.run([sys.executable, "-m", "mlflow", "run", os.path.join(REPO, "projects", "dropout"),
                           "--env-manager", "local", "-P", "rates=0,0.5", "-P", "epochs=1", "-P", "hidden=4"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = all_runs()
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags["mlflow.project.entryPoint"] == "main" and parent.info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children_of(parent.info.run_id)) == ["dropout=0", "dropout=0.5"]
