"""A user's own keras-tuner search under mlflow_dl.autolog(): real keras-tuner, real MLflow, tiny data."""

from __future__ import annotations

import keras
import keras_tuner as kt
import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import all_runs

import mlflow_dl


@pytest.fixture
def autologged():
    mlflow_dl.autolog()
    yield
    mlflow_dl.autolog(disable=True)


def _data(rows=40):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 3)).astype("float32")
    return x, (x @ np.array([1.0, -2.0, 0.5]) + 3).astype("float32")


def build_model(hp):
    """The lecture's build function: a hidden layer of hp.Choice nodes, Adam at hp.Choice learning rate."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(hp.Choice("node1", [8, 16]), activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(hp.Choice("learning_rate", [1e-3, 1e-2])), loss="mse")
    return model


def _parents():
    return [r for r in all_runs() if r.data.tags.get("mlflow_dl.family") == "tune"
            and "mlflow.parentRunId" not in r.data.tags]


def _children(parent_id):
    return [r for r in all_runs() if r.data.tags.get("mlflow.parentRunId") == parent_id]


def test_the_lecture_cell_gives_a_parent_and_a_child_per_trial(autologged, tmp_path):
    x, y = _data()
    tuner = kt.RandomSearch(build_model, objective="val_loss", max_trials=3, seed=1, directory=str(tmp_path / "kt"),
                            project_name="lecture")
    tuner.search(x, y, epochs=2, validation_split=.2, verbose=0)

    assert type(tuner) is kt.RandomSearch  # its own class back after the search
    (parent,) = _parents()
    assert parent.info.status == "FINISHED" and parent.info.run_name == "RandomSearch lecture"
    children = _children(parent.info.run_id)
    assert sorted(c.data.tags["tuner/trial_id"] for c in children) == ["0", "1", "2"]
    client = mlflow.MlflowClient()
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["tuner/status"] == "completed"
        assert child.data.params["hp.node1"] in ("8", "16")
        assert child.data.params["hp.learning_rate"] in ("0.001", "0.01")
        assert np.isfinite(child.data.metrics["best_val_loss"])
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")] == [0, 1]
        files = {a.path for a in client.list_artifacts(child.info.run_id, "checkpoints")}
        assert files == {"checkpoints/best.keras"}
    best_trial = tuner.oracle.get_best_trials(1)[0]
    (best_child,) = [c for c in children if c.data.tags["tuner/trial_id"] == best_trial.trial_id]
    assert parent.data.tags["best_run_id"] == best_child.info.run_id
    paths = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.csv", "results_summary.txt", "best_hyperparameters.json"} <= paths
    summary = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/results_summary.txt")
    assert "Results summary" in summary and f"Trial {best_trial.trial_id} summary" in summary
    assert mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/best_hyperparameters.json") == \
        best_trial.hyperparameters.values
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="results.csv"))
    assert len(table) == 3 and {"node1", "learning_rate", "best_val_loss", "run_id"} <= set(table.columns)
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/val_loss_curves.png" in figures
    # every numeric hyper-parameter the three trials varied has its plot
    varied = [k for k in ("node1", "learning_rate") if table[k].nunique() > 1]
    assert varied and {f"plots/val_loss_vs_{k}.png" for k in varied} <= figures
    # promoted like a sweep: the best child, registered
    from mlflow_dl.registry.promotion import promote

    promoted = promote("mlflow-dl", "lecture", parent_run_id=parent.info.run_id)
    lowest = min(children, key=lambda c: c.data.metrics["best_val_loss"])
    assert promoted.moved and promoted.run_id == lowest.info.run_id


def test_hyperband_children_carry_bracket_round_and_epochs(autologged, tmp_path):
    x, y = _data()
    tuner = kt.Hyperband(build_model, objective="val_loss", max_epochs=3, factor=3, seed=1,
                         directory=str(tmp_path / "kt"), project_name="hb")
    tuner.oracle.max_trials = 4
    tuner.search(x, y, validation_split=.2, verbose=0)

    (parent,) = _parents()
    children = _children(parent.info.run_id)
    assert len(children) == len(tuner.oracle.trials) >= 2
    for child in children:
        assert {"tuner/bracket", "tuner/round", "tuner/epochs"} <= set(child.data.tags)
        assert child.data.tags["tuner/epochs"] == str(tuner.oracle.trials[child.data.tags["tuner/trial_id"]]
                                                      .hyperparameters.values["tuner/epochs"])
    assert not any(k.startswith("hp.tuner/") for c in children for k in c.data.params)


def test_a_resumed_search_continues_its_parent_without_doubling_a_trial(autologged, tmp_path):
    x, y = _data()
    common = dict(objective="val_loss", seed=1, directory=str(tmp_path / "kt"), project_name="resume")
    kt.RandomSearch(build_model, max_trials=2, **common).search(x, y, epochs=1, validation_split=.2, verbose=0)
    (parent,) = _parents()
    resumed = kt.RandomSearch(build_model, max_trials=3, overwrite=False, **common)
    resumed.search(x, y, epochs=1, validation_split=.2, verbose=0)

    (again,) = _parents()
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    children = _children(parent.info.run_id)
    assert sorted(c.data.tags["tuner/trial_id"] for c in children) == ["0", "1", "2"]
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="results.csv"))
    assert len(table) == 3
    # a new search in another folder is a new parent
    kt.RandomSearch(build_model, max_trials=1, objective="val_loss", directory=str(tmp_path / "kt"),
                    project_name="other").search(x, y, epochs=1, validation_split=.2, verbose=0)
    assert len(_parents()) == 2


def test_executions_per_trial_are_runs_under_the_trial_which_holds_their_mean(autologged, tmp_path):
    x, y = _data()
    tuner = kt.RandomSearch(build_model, objective="val_loss", max_trials=1, executions_per_trial=2, seed=1,
                            directory=str(tmp_path / "kt"), project_name="ex")
    tuner.search(x, y, epochs=2, validation_split=.2, verbose=0)

    (parent,) = _parents()
    (trial,) = _children(parent.info.run_id)
    executions = _children(trial.info.run_id)
    assert sorted(e.data.tags["tuner/execution"] for e in executions) == ["0", "1"]
    best = [e.data.metrics["best_val_loss"] for e in executions]
    assert trial.data.metrics["best_val_loss"] == pytest.approx(np.mean(best))
    model = [e.data.metrics["model_val_loss"] for e in executions]  # what ranks the trial without keras-tuner's word
    assert trial.data.metrics["model_val_loss"] == pytest.approx(np.mean(model))
    assert all(e.info.status == "FINISHED" for e in executions)


def test_a_hypermodel_and_disable_restores_keras_tuner(tmp_path):
    class Model(kt.HyperModel):
        def build(self, hp):
            return build_model(hp)

    x, y = _data()
    original = kt.Tuner.search
    mlflow_dl.autolog()
    try:
        kt.GridSearch(Model(), objective="val_loss", max_trials=2, directory=str(tmp_path / "kt"),
                      project_name="grid").search(x, y, epochs=1, validation_split=.2, verbose=0)
        (parent,) = _parents()
        assert parent.info.run_name == "GridSearch grid" and len(_children(parent.info.run_id)) == 2
    finally:
        mlflow_dl.autolog(disable=True)
    assert kt.Tuner.search is original
    kt.RandomSearch(build_model, objective="val_loss", max_trials=1, directory=str(tmp_path / "kt"),
                    project_name="untracked").search(x, y, epochs=1, validation_split=.2, verbose=0)
    assert len(_parents()) == 1


def test_a_keras_tuner_without_the_expected_hooks_is_left_alone_with_a_warning(monkeypatch):
    from keras_tuner.src.engine import base_tuner

    original = kt.Tuner.search
    monkeypatch.delattr(base_tuner.BaseTuner, "project_dir")
    with pytest.warns(UserWarning, match="tracked fit by fit only"):
        mlflow_dl.autolog()
    try:
        assert kt.Tuner.search is original
    finally:
        mlflow_dl.autolog(disable=True)


def test_a_failing_trial_is_a_failed_child_and_the_search_goes_on(autologged, tmp_path):
    def build(hp):
        units = hp.Choice("units", [2, 4])
        if units == 4:
            raise ValueError("no 4 today")
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(units), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        return model

    x, y = _data()
    tuner = kt.GridSearch(build, objective="val_loss", max_trials=4, directory=str(tmp_path / "kt"),
                          project_name="fail", max_consecutive_failed_trials=5)
    tuner.search(x, y, epochs=1, validation_split=.2, verbose=0)
    (parent,) = _parents()
    children = _children(parent.info.run_id)
    failed = [c for c in children if c.info.status == "FAILED"]
    assert failed and all(c.data.params["hp.units"] == "4" for c in failed)
    assert all(c.data.tags["tuner/status"] in ("failed", "invalid") for c in failed)
    assert parent.info.status == "FINISHED" and mlflow.active_run() is None


@pytest.mark.slow
def test_a_two_input_search_is_promoted_and_served_on_named_tensors(autologged, tracking_store, tmp_path):
    from test_autolog_serving import post, scoring_servers

    from mlflow_dl.registry.promotion import promote

    def build(hp):
        a, b = keras.Input((2,), name="a"), keras.Input((1,), name="b")
        hidden = keras.layers.Dense(hp.Choice("units", [2, 4]), activation="relu")(keras.layers.Concatenate()([a, b]))
        model = keras.Model([a, b], keras.layers.Dense(1)(hidden))
        model.compile(optimizer="adam", loss="mse")
        return model

    x, y = _data()
    inputs = {"a": x[:, :2], "b": x[:, 2:]}
    kt.GridSearch(build, objective="val_loss", directory=str(tmp_path / "kt"), project_name="two").search(
        [inputs["a"], inputs["b"]], y, epochs=1, validation_split=.2, verbose=0)
    (parent,) = _parents()
    promoted = promote("mlflow-dl", "two-inputs", parent_run_id=parent.info.run_id)
    assert promoted.moved
    local = mlflow.pyfunc.load_model("models:/two-inputs@champion")
    request = {k: v[:4] for k, v in inputs.items()}
    with scoring_servers({"champion": "models:/two-inputs@champion"}, tracking_store, str(tmp_path)) as urls:
        got = post(urls["champion"], {"inputs": {k: v.tolist() for k, v in request.items()}})
    np.testing.assert_allclose(got, np.asarray(local.predict(request)), rtol=1e-5, atol=1e-6)
