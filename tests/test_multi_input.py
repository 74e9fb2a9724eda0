"""Functional-API multi-input models: groups, the graph, the sweep against its baseline, the served routing."""

import os
import re
import shutil
import sys

import keras
import mlflow
import numpy as np
import pytest

from conftest import all_runs
from mlflow_dl.cli import main as cli_main
from mlflow_dl.config import FitSpec, ModelSpec
from mlflow_dl.data.datasets import load_dataset
from mlflow_dl.data.groups import parse_groups
from mlflow_dl.errors import ConfigError
from mlflow_dl.models.multi_input import build_mixed, build_multi_input

COLUMNS = tuple(load_dataset("breast_cancer").X.columns)
GROUPS = "mean *;worst *;* error"


def artifact_paths(client, run_id, path=""):
    out = []
    for f in client.list_artifacts(run_id, path):
        out.extend(artifact_paths(client, run_id, f.path) if f.is_dir else [f.path])
    return out


def test_groups_from_globs_names_and_auto():
    groups = parse_groups(GROUPS, COLUMNS)
    assert list(groups) == ["mean", "worst", "error"]
    assert groups["mean"] == tuple(c for c in COLUMNS if c.startswith("mean "))
    assert groups["error"] == tuple(c for c in COLUMNS if c.endswith(" error"))
    named = parse_groups("size=mean radius,mean area;shape=mean smoothness", COLUMNS)
    assert named == {"size": ("mean radius", "mean area"), "shape": ("mean smoothness",)}
    auto = parse_groups("auto", COLUMNS)  # 3 contiguous blocks: on breast_cancer exactly mean / error / worst
    assert [set(v) for v in auto.values()] == [set(v) for v in (groups["mean"], groups["error"], groups["worst"])]


@pytest.mark.parametrize("groups, named", [
    ("mean *;nothing *", "'nothing *' matches no column"),
    ("mean *;mean radius,worst *", "column 'mean radius' is in two groups"),
    ("mean *;;worst *", "empty group"),
    ("mean *", "needs two or more"),
    ("auto:99", "auto:99"),
])
def test_bad_groups_name_what_is_wrong(groups, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        parse_groups(groups, COLUMNS)


@pytest.mark.parametrize("groups, named", [("mean *;nothing *", "'nothing *' matches no column"),
                                           ("mean *;mean radius,worst *", "in two groups")])
def test_bad_groups_one_line_exit_2_and_no_run(groups, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["sweep", "multi_input", "--groups", groups, "--epochs", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: groups") and named in err and len(err.splitlines()) == 1
    assert all_runs() == []


def test_multi_input_graph_has_named_inputs_branches_and_concat():
    model = build_multi_input({"mean": 10, "worst": 10, "error": 10}, 4, ModelSpec(hidden=(8,)), "binary")
    assert [t.name for t in model.inputs] == ["mean", "worst", "error"]
    for name in ("mean", "worst", "error"):
        branch = model.get_layer(f"{name}_dense")
        assert branch.units == 4 and branch.input.name == name
    layers = {layer["name"]: layer for layer in model.get_config()["layers"]}
    joined = [t["config"]["keras_history"][0] for t in layers["concat"]["inbound_nodes"][0]["args"][0]]
    assert layers["concat"]["class_name"] == "Concatenate" and joined == ["mean_dense", "worst_dense", "error_dense"]
    assert model.get_layer("concat").output.shape[-1] == 12 and model.output_shape == (None, 1)


def test_mixed_model_recurrent_branch_beside_static_dense_branch():
    model = build_mixed(timesteps=5, series_features=2, static_features=3, recurrent_units=4, static_units=4,
                        spec=ModelSpec(hidden=(4,)), task="regression")
    assert [t.name for t in model.inputs] == ["series", "static"]
    assert isinstance(model.get_layer("series_lstm"), keras.layers.LSTM)
    rng = np.random.default_rng(0)
    x = {"series": rng.normal(size=(16, 5, 2)).astype("float32"), "static": rng.normal(size=(16, 3)).astype("float32")}
    history = model.fit(x, rng.normal(size=16).astype("float32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and model.predict_on_batch(x).shape == (16, 1)


# one worker takes the whole module, so its module-scoped fixture runs once (each xdist worker has its own)
pytestmark = pytest.mark.xdist_group("test_multi_input")


@pytest.fixture(scope="module")
def sweep_result(tmp_path_factory):
    """One tiny multi-input sweep (breast_cancer, 1 epoch) shared by the assertions below."""
    from mlflow_dl.families import sweep

    root = tmp_path_factory.mktemp("multi_input")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    result = sweep("multi_input", model=ModelSpec(hidden=(4,)), fit=FitSpec(epochs=1, patience=None),
                   groups=GROUPS, branch_units="4", progress=False)
    mlflow.set_tracking_uri(None)
    return uri, result


def test_single_and_multi_input_children_in_one_parent(sweep_result):
    uri, result = sweep_result
    client = mlflow.MlflowClient(uri)
    kids = {r.info.run_name: r for r in all_runs(uri) if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id}
    assert set(kids) == {"single-input u=4", "multi-input u=4"}
    assert all(k.info.status == "FINISHED" and k.data.tags["mlflow_dl.family"] == "multi_input" for k in kids.values())
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["best_run_id"] in {k.info.run_id for k in kids.values()}
    assert {"results.csv", "plots/loss_vs_swept_value.png"} <= set(artifact_paths(client, result.parent_run_id))
    table = result.table.set_index("trial")
    assert table.loc["multi-input u=4", "inputs"] == 3 and table.loc["single-input u=4", "inputs"] == 1
    single, multi = table.loc["single-input u=4", "total_params"], table.loc["multi-input u=4", "total_params"]
    assert abs(single - multi) / multi < 0.1  # the baseline is sized to a comparable parameter count
    drawn = shutil.which("dot") is not None  # Graphviz (apt-get install graphviz): without it, no picture
    for kid in kids.values():  # every run: the summary as text, and the graph as a picture where `dot` is
        paths = artifact_paths(client, kid.info.run_id)
        assert "model_summary.txt" in paths and ("plots/model.png" in paths) == drawn
    summary = mlflow.artifacts.download_artifacts(run_id=kids["multi-input u=4"].info.run_id,
                                                  artifact_path="model_summary.txt", tracking_uri=uri)
    text = open(summary, encoding="utf-8").read()
    assert all(f"{g}_dense" in text for g in ("mean", "worst", "error")) and "concat" in text


def test_served_multi_input_model_routes_one_dataframe_to_its_inputs(sweep_result, tmp_path):
    from mlflow.exceptions import MlflowException

    from mlflow_dl.data.groups import group_splits
    from mlflow_dl.data.split import split_and_scale
    from mlflow_dl.config import DataSpec

    uri, result = sweep_result
    mlflow.set_tracking_uri(uri)
    run_id = result.table.set_index("trial").loc["multi-input u=4", "run_id"]
    served = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert served.metadata.metadata["mlflow_dl"]["input_groups"] == {
        k: list(v) for k, v in parse_groups(GROUPS, COLUMNS).items()}
    splits = split_and_scale(load_dataset("breast_cancer"), DataSpec())
    rows = splits.raw_test.iloc[:, ::-1]  # one DataFrame, columns in any order
    checkpoint = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints/best.keras",
                                                     dst_path=str(tmp_path))
    model = keras.saving.load_model(checkpoint, safe_mode=True)
    expected = model.predict(group_splits(splits, parse_groups(GROUPS, COLUMNS)).x_test, verbose=0)[:, 0]
    np.testing.assert_allclose(served.predict(rows)["probability"], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(MlflowException, match="unexpected columns"):
        served.predict(rows.assign(extra=1.0))
    mlflow.set_tracking_uri(None)


def test_no_graphviz_the_run_goes_on_and_says_so_once(monkeypatch, capfd):
    from mlflow_dl.fit import callback, fit_artifacts

    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # no `dot` on the PATH
    monkeypatch.setattr(fit_artifacts, "_SAID_NO_GRAPHVIZ", False)
    x, y = np.random.default_rng(0).normal(size=(12, 3)).astype("float32"), np.arange(12) % 2
    run_ids = []
    for _ in range(2):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
        model.compile("adam", "binary_crossentropy")
        tracker = callback.MlflowCallback(log_model=False)
        model.fit(x, y, validation_split=0.25, epochs=1, verbose=0, callbacks=[tracker])
        run_ids.append(tracker.run_id)
    err = capfd.readouterr().err
    assert err.count("no model diagram (plots/model.png)") == 1
    assert "apt-get install graphviz" in err and "brew install graphviz" in err
    client = mlflow.MlflowClient()
    for run_id in run_ids:
        assert client.get_run(run_id).info.status == "FINISHED"
        paths = artifact_paths(client, run_id)
        assert "model_summary.txt" in paths and "plots/model.png" not in paths


@pytest.mark.slow
def test_mlflow_run_entry_point_with_glob_groups(tracking_store):
    """`mlflow run . -e multi_input`: the groups (spaces, ';', '*') reach the CLI intact; parent = mlflow run's run."""
    import subprocess

    from conftest import REPO

    cmd = [sys.executable, "-m", "mlflow", "run", REPO, "-e", "multi_input", "--env-manager", "local",
           "--experiment-name", "projects", "-P", f"groups={GROUPS}", "-P", "branch_units=4", "-P", "hidden=4",
           "-P", "epochs=1"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_store}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not re.search(r"^[IWEF]\d{4} |absl::InitializeLog", proc.stderr, re.M), proc.stderr  # the CLI starts quietly
    runs = all_runs(tracking_store)
    (parent,) = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "multi_input"]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.data.tags["mlflow_dl.family"] == "multi_input"
    assert sorted(k.info.run_name for k in kids) == ["multi-input u=4", "single-input u=4"]
    assert all(k.info.status == "FINISHED" and k.data.params["trial.groups"] == GROUPS for k in kids)
