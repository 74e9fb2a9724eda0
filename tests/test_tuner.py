"""keras-tuner searches as MLflow runs: real keras-tuner, real MLflow, a few dozen rows."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, all_runs, free_port

from mlflow_dl.config import DataSpec
from mlflow_dl.errors import ConfigError

SMALL_SPACE = "layers: 1\nnodes: [4, 8]\nlr: {min: 1.0e-3, max: 1.0e-2, sampling: log}\ndropout: 0\nl1: [0, 1e-3]\nl2: 0\n"


@pytest.fixture
def tiny(tmp_path):
    """40 rows, 3 features, a regression target; and a small search space file."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    pd.DataFrame(x, columns=["a", "b", "c"]).assign(y=x @ [1.0, -2.0, 0.5] + 3).to_csv(tmp_path / "tiny.csv", index=False)
    (tmp_path / "space.yaml").write_text(SMALL_SPACE)
    return DataSpec(str(tmp_path / "tiny.csv"), target="y"), str(tmp_path / "space.yaml")


def _children(parent_id):
    return [r for r in all_runs() if r.data.tags.get("mlflow.parentRunId") == parent_id]


def _parents():
    return [r for r in all_runs() if r.data.tags.get("mlflow_dl.family") == "tune"
            and "mlflow.parentRunId" not in r.data.tags]


def _csv(run_id):
    return pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="results.csv"))


@pytest.mark.parametrize("kind, trials, epochs", [("random", 2, 1), ("grid", 2, 1), ("bayesian", 2, 1),
                                                  ("hyperband", 4, 3)])
def test_each_tuner_kind_logs_one_child_per_trial_and_a_summary(tiny, kind, trials, epochs):
    from mlflow_dl.sweeps.tuning import tune

    data, space = tiny
    result = tune(data, tuner=kind, max_trials=trials, epochs=epochs, space=space, search_id=f"t-{kind}", echo=lambda _: None)

    (parent,) = _parents()
    children = _children(parent.info.run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_id == result.parent_run_id
    assert len(children) == trials
    assert sorted(c.data.tags["tuner/trial_id"] for c in children) == [str(i) for i in range(trials)]
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["tuner/status"] == "completed"
        assert child.data.tags["mlflow_dl.family"] == "tune"
        assert child.data.params["hp.nodes"] in ("4", "8") and "hp.lr" in child.data.params
        assert np.isfinite(child.data.metrics["best_val_loss"])
        curve = mlflow.MlflowClient().get_metric_history(child.info.run_id, "val_loss")
        assert len(curve) >= 1
    best = min(children, key=lambda c: c.data.metrics["model_val_loss"])
    assert len({c.data.tags["mlflow_dl.comparability_key"] for c in children}) == 1
    assert parent.data.tags["best_run_id"] == best.info.run_id == result.best_run_id
    assert "test_mae" in parent.data.metrics and parent.data.metrics["n_trials"] == trials
    paths = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id)}
    assert {"results.csv", "results_summary.txt", "best_hyperparameters.json", "plots"} <= paths
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, "plots")}
    assert "plots/predicted_vs_actual.png" in plots
    assert len(_csv(parent.info.run_id)) == trials
    summary = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/results_summary.txt")
    assert "Results summary" in summary and "Score:" in summary
    best_hp = mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/best_hyperparameters.json")
    assert str(best_hp["nodes"]) == best.data.params["hp.nodes"]
    if kind == "hyperband":
        assert all({"tuner/bracket", "tuner/round", "tuner/epochs"} <= set(c.data.tags) for c in children)
        (resumed,) = [c for c in children if c.data.tags["tuner/round"] == "1"]
        steps = [m.step for m in mlflow.MlflowClient().get_metric_history(resumed.info.run_id, "val_loss")]
        assert resumed.data.tags["tuner/epochs"] == "3" and steps == [1, 2]  # continues from epoch 1
        assert resumed.data.metrics["stopped_epoch"] == 2


def test_a_resumed_search_adds_only_the_new_trials_and_promotes_its_best(tiny):
    from mlflow_dl.registry.promotion import promote
    from mlflow_dl.sweeps.tuning import tune

    data, space = tiny
    first = tune(data, max_trials=2, epochs=1, space=space, search_id="again", echo=lambda _: None)
    second = tune(data, max_trials=3, epochs=1, space=space, search_id="again", echo=lambda _: None)
    third = tune(data, max_trials=3, epochs=1, space=space, search_id="again", echo=lambda _: None)

    assert first.parent_run_id == second.parent_run_id == third.parent_run_id
    (parent,) = _parents()
    children = _children(parent.info.run_id)
    assert sorted(c.data.tags["tuner/trial_id"] for c in children) == ["0", "1", "2"]
    assert parent.info.status == "FINISHED" and len(_csv(parent.info.run_id)) == 3
    with pytest.raises(ConfigError, match="tune.tuner='bayesian' differs from search 'again'"):
        tune(data, tuner="bayesian", max_trials=4, epochs=1, space=space, search_id="again")
    assert len(all_runs()) == 4
    assert promote("mlflow-dl", "tiny-tuned", parent_run_id=third.parent_run_id).run_id == third.best_run_id


def test_a_diverging_trial_ends_failed_with_its_keras_tuner_status(tiny, tmp_path):
    from mlflow_dl.sweeps.tuning import tune

    (tmp_path / "huge_lr.yaml").write_text("layers: 2\nnodes: 64\nlr: 1.0e+12\ndropout: 0\nl1: 0\nl2: 0\n")
    result = tune(tiny[0], max_trials=2, epochs=2, space=str(tmp_path / "huge_lr.yaml"), search_id="nan",
                  echo=lambda _: None)

    (parent,) = _parents()
    children = _children(parent.info.run_id)
    assert len(children) == 1  # the space has one point: keras-tuner stops after it
    assert children[0].info.status == "FAILED" and children[0].data.tags["tuner/status"] == "invalid"
    assert "loss became" in children[0].data.tags["mlflow_dl.error"]
    assert parent.info.status == "FINISHED" and "best_run_id" not in parent.data.tags
    assert parent.data.metrics["n_failed"] == 1 and result.best_run_id is None


def test_a_search_with_more_trials_than_a_page_still_finds_its_parent():
    """Its trials carry the search's tags too and are newer than the parent: a search of 25 trials
    resumed must continue its parent, not open a second one."""
    from mlflow_dl.sweeps.search_runs import FAMILY, SEARCH_TAG, TRIAL_TAG, find_parent

    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment("many-trials")
    tags = {SEARCH_TAG: "big", "mlflow_dl.family": FAMILY}
    parent = client.create_run(experiment_id, tags=tags, start_time=1_000)
    for trial in range(25):
        client.create_run(experiment_id, start_time=2_000 + trial,
                          tags={**tags, TRIAL_TAG: f"{trial:02d}", "mlflow.parentRunId": parent.info.run_id})
    assert find_parent("big", experiment_id).info.run_id == parent.info.run_id
    assert find_parent("big", experiment_id, autologged=True) is None  # a user's search names its project
    assert find_parent("other", experiment_id) is None


@pytest.mark.parametrize("text, message", [
    ("units: [8]\n", "unknown key 'units'"),
    ("nodes: []\n", "nodes=[] is invalid; expected a non-empty list"),
    ("lr: {min: 0.1, max: 0.01}\n", "the range 0.1..0.01 is empty"),
    ("dropout: [0.2, 1.5]\n", "dropout=1.5 is invalid; expected rates in [0, 1)"),
    ("nodes: {min: 8, max: 64, step: 0}\n", "nodes.step=0.0 is invalid"),
    ("- 1\n- 2\n", "must map hyper-parameter names to ranges"),
])
def test_bad_search_spaces_fail_before_anything_starts(tmp_path, tiny, no_store, text, message):
    from mlflow_dl.sweeps.tuning import tune

    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        tune(tiny[0], space=str(tmp_path / "bad.yaml"), search_id="bad")
    assert not os.path.exists("mlflow.db") and not os.path.exists("keras_tuner")  # no store, no tuner state


def test_cli_prints_one_line_and_exits_2_for_a_bad_space(tmp_path, tiny, capsys):
    from mlflow_dl.cli import main

    (tmp_path / "bad.yaml").write_text("units: 8\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--dataset", tiny[0].dataset, "--target", "y", "--space", str(tmp_path / "bad.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "unknown key 'units'" in err[0]


def test_a_remote_oracle_is_refused_unless_allowed(tiny, no_store, monkeypatch):
    from mlflow_dl.sweeps.search_plan import distributed_role
    from mlflow_dl.sweeps.tuning import tune

    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "10.1.2.3")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner1")
    with pytest.raises(ConfigError, match="not a loopback address.*--allow-remote-oracle"):
        tune(tiny[0], search_id="remote")
    assert not os.path.exists("mlflow.db")
    assert distributed_role(allow_remote_oracle=True) == "worker"
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    assert distributed_role() == "chief"


@pytest.mark.slow
def test_a_chief_and_two_workers_log_every_trial_under_one_parent(tiny, mlflow_server):
    data, space = tiny
    port = str(free_port())
    cmd = [sys.executable, "-m", "mlflow_dl", "tune", "--dataset", data.dataset, "--target", "y", "--max-trials", "3",
           "--epochs", "1", "--space", space, "--search-id", "dist", "--experiment", "tune-distributed"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "KERASTUNER_ORACLE_IP": "127.0.0.1",
           "KERASTUNER_ORACLE_PORT": port, "PYTHONPATH": REPO}
    procs = [subprocess.Popen(cmd, env={**env, "KERASTUNER_TUNER_ID": tid}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for tid in ("chief", "tuner1", "tuner2")]
    deadline = time.time() + 300
    for p in procs:
        try:
            p.wait(max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            break
    for p in procs:
        if p.poll() is None:
            p.kill()
    outputs = [p.communicate()[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n---\n".join(o[-1500:] for o in outputs)

    client = mlflow.MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("tune-distributed")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(c.data.tags["tuner/trial_id"] for c in children) == ["0", "1", "2"]
    assert {c.data.tags["tuner/tuner_id"] for c in children} <= {"tuner1", "tuner2"}
    assert all(c.info.status == "FINISHED" for c in children)
    assert parents[0].data.tags["best_run_id"] in {c.info.run_id for c in children}


def test_a_worker_that_starts_after_every_trial_is_done_exits_without_running_one(tiny, monkeypatch):
    from mlflow_dl.sweeps import tuning as tuner_module

    first = tuner_module.tune(tiny[0], max_trials=1, epochs=1, space=tiny[1], search_id="late", echo=lambda _: None)
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(free_port()))  # no chief listens: the search is over
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "late-worker")
    monkeypatch.setattr(tuner_module, "ORACLE_GRACE_SECONDS", 2)
    said = []
    late = tuner_module.tune(tiny[0], max_trials=1, epochs=1, space=tiny[1], search_id="late", echo=said.append)

    assert late.role == "worker" and late.parent_run_id == first.parent_run_id
    assert said == [f"search late is already complete (parent run {first.parent_run_id}); nothing left to run"]
    assert len(_children(first.parent_run_id)) == 1


def test_a_recurrent_search_fits_each_trial_on_its_own_windows(tmp_path):
    from mlflow_dl.data.series import SeriesSpec
    from mlflow_dl.sweeps.tuning import tune

    (tmp_path / "rnn.yaml").write_text("cell: [rnn, lstm]\nunits: 4\ntimesteps: [2, 4]\n")
    result = tune(SeriesSpec("sunspots"), model="recurrent", max_trials=2, epochs=1, space=str(tmp_path / "rnn.yaml"),
                  search_id="rnn", echo=lambda _: None)

    children = _children(result.parent_run_id)
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    for child in children:
        assert child.data.params["data.timesteps"] == child.data.params["hp.timesteps"]
        assert child.data.params["model.cell"] == child.data.params["hp.cell"]
    # whatever the window, the same validation and test targets: every row of those parts
    scored = [{k: c.data.params[k] for k in ("val_rows", "val_first_target", "test_rows", "test_last_target")}
              for c in children]
    assert scored[0] == scored[1] == {"val_rows": "47", "val_first_target": "1915-01-01", "test_rows": "47",
                                      "test_last_target": "2008-01-01"}
    parent = mlflow.MlflowClient().get_run(result.parent_run_id)
    assert parent.data.tags["best_run_id"] == result.best_run_id and "test_mae" in parent.data.metrics
