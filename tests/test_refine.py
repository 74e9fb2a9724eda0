"""Refine a finished sweep near its best: new trials between the best's neighbours, the coarse ones linked."""

import math
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from conftest import REPO, all_runs
from mlflow_dl.cli import main
from mlflow_dl.refinement import NOTE_TAG, REFINES_TAG

BUILDER = '''
import keras


def build(units=8, lr=0.01, act="relu"):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(units, activation=act), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    return model
'''


@pytest.fixture
def frame(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    (tmp_path / "user_model.py").write_text(BUILDER)
    return pd.DataFrame(x, columns=["a", "b", "c"]).assign(y=x @ [1.0, -2.0, 0.5] + rng.normal(0, 0.1, 80))


def children(parent_id):
    return {r.info.run_id: r for r in all_runs() if r.data.tags.get("mlflow.parentRunId") == parent_id}


def table_of(parent_id):
    return pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent_id, artifact_path="results.csv"))


def neighbours(values, best):
    axis = sorted(set(values))
    i = axis.index(best)
    return (axis[i - 1] if i > 0 else None), (axis[i + 1] if i < len(axis) - 1 else None)


def cli(args, capsys):
    """Exit code, stdout, and the error lines of stderr (MLflow's artifact progress bars left out)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return exit_info.value.code, out.out, "".join(line + "\n" for line in out.err.splitlines()
                                                  if line.startswith("error:"))


def test_refine_a_custom_sweep_between_the_best_neighbours_then_deeper_and_promote(frame, tracking_store):
    from mlflow_dl import refine, sweep_model
    from mlflow_dl.registry.promotion import promote

    coarse = sweep_model("user_model.py:build", {"units": [2, 8, 32, 128], "lr": [0.01]}, frame, target="y",
                         epochs=2, progress=False, experiment="refine-me")
    refined = refine(coarse.parent_run_id, trials=2, data=frame, target="y", progress=False)

    parent = mlflow.get_run(refined.parent_run_id)
    assert parent.data.tags[REFINES_TAG] == coarse.parent_run_id
    key = "mlflow_dl.comparability_key"
    assert parent.data.tags[key] == mlflow.get_run(coarse.best_run_id).data.tags[key]
    assert parent.info.experiment_id == mlflow.get_run(coarse.parent_run_id).info.experiment_id
    assert {k: v for k, v in parent.data.params.items() if k.startswith(("data.seed", "data.val", "fit.epochs"))} == \
        {k: v for k, v in mlflow.get_run(coarse.parent_run_id).data.params.items()
         if k.startswith(("data.seed", "data.val", "fit.epochs"))}
    new = children(refined.parent_run_id)
    assert len(new) == 2  # only the new trials ran
    best_units = int(coarse.best["units"])
    lo, hi = neighbours([2, 8, 32, 128], best_units)
    for run in new.values():
        units = int(run.data.params["trial.units"])
        assert units not in (2, 8, 32, 128) and run.data.params["trial.lr"] == "0.01"
        assert (lo is None or lo < units) and (hi is None or units < hi), (lo, units, hi)
    if lo is None or hi is None:  # on the grid's edge: one step past it, and said so
        assert "edge" in parent.data.tags[NOTE_TAG]
    table = table_of(refined.parent_run_id)
    assert set(coarse.table["run_id"]) | set(new) == set(table["run_id"])  # coarse linked, not retrained
    assert set(table["sweep_run_id"]) == {coarse.parent_run_id, refined.parent_run_id}
    client = mlflow.MlflowClient()
    assert {"plots/loss_vs_swept_value.png", "plots/val_loss_curves.png"} <= {
        f.path for f in client.list_artifacts(refined.parent_run_id, "plots")}
    assert parent.data.tags["best_run_id"] == table.loc[table["model_val_loss"].idxmin(), "run_id"]

    # promote over the refined parent compares the coarse and the refined trials
    promotion = promote("refine-me", "refined-model", parent_run_id=refined.parent_run_id)
    assert promotion.run_id == table.loc[table["model_val_loss"].idxmin(), "run_id"]

    # one level deeper: the refined parent's table (coarse and refined) is the grid now
    deeper = refine(refined.parent_run_id, trials=1, data=frame, target="y", progress=False)
    assert mlflow.get_run(deeper.parent_run_id).data.tags[REFINES_TAG] == refined.parent_run_id
    (run,) = children(deeper.parent_run_id).values()
    units = int(run.data.params["trial.units"])
    lo, hi = neighbours(table["units"].astype(int).tolist(), int(refined.best["units"]))
    assert (lo is None or lo < units) and (hi is None or units < hi)
    assert len(table_of(deeper.parent_run_id)) == len(table) + 1


def test_refine_refuses_other_data_and_data_left_out(frame, tracking_store):
    from mlflow_dl import refine, sweep_model
    from mlflow_dl.errors import ConfigError, DataError

    coarse = sweep_model("user_model.py:build", {"units": [2, 8]}, frame, target="y", epochs=1, progress=False)
    other = frame.assign(y=frame["y"] * 2)
    with pytest.raises(DataError, match="digest") as info:
        refine(coarse.parent_run_id, data=other, target="y", progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="passed again"):
        refine(coarse.parent_run_id, progress=False)
    assert len([r for r in all_runs() if "mlflow.parentRunId" not in r.data.tags]) == 1  # nothing started


def test_refine_a_capacity_sweep_around_its_knee(tracking_store):
    from mlflow_dl import refine
    from mlflow_dl.config import FitSpec
    from mlflow_dl.families import sweep

    # with these settings the elbow is at 4 nodes, not at the lowest loss (128)
    coarse = sweep("capacity", progress=False, layers="1", nodes="2,4,8,32,128",
                   fit=FitSpec(epochs=5, patience=None, lr=0.01))
    knee = mlflow.get_run(coarse.parent_run_id).data.metrics["knee_total_params"]
    finished = coarse.table[coarse.table["status"] == "FINISHED"]
    center = finished.loc[(np.log10(finished["total_params"]) - math.log10(knee)).abs().idxmin()]
    refined = refine(coarse.parent_run_id, trials=2, progress=False)
    assert center["run_id"] != coarse.best_run_id  # the knee, not the best
    lo, hi = neighbours([2, 4, 8, 32, 128], int(center["nodes"]))
    new = children(refined.parent_run_id).values()
    assert len(new) >= 1
    for run in new:
        nodes = int(run.data.params["trial.nodes"])
        assert run.data.params["trial.layers"] == "1" and nodes not in (2, 4, 8, 32, 128)
        assert (lo is None or lo < nodes) and (hi is None or nodes < hi), (lo, nodes, hi)


def test_refine_errors_are_one_line_exit_2(frame, tracking_store, capsys):
    from mlflow_dl import sweep_model

    with mlflow.start_run() as plain:
        pass
    code, _, err = cli(["refine", plain.info.run_id], capsys)
    assert code == 2 and err.count("\n") == 1 and "is not a sweep's parent run" in err
    words = sweep_model("user_model.py:build", {"act": ["relu", "tanh"]}, frame, target="y", epochs=1,
                        progress=False)
    code, _, err = cli(["refine", words.parent_run_id], capsys)
    assert code == 2 and err.count("\n") == 1 and "no numeric axis" in err
    from mlflow_dl.config import FitSpec, ModelSpec
    from mlflow_dl.families import sweep

    failed = sweep("regularization", progress=False, kind="l1", strengths="1e37,1e38", model=ModelSpec(hidden="4"),
                   fit=FitSpec(epochs=2, patience=None))  # both diverge
    assert set(failed.table["status"]) == {"FAILED"}
    code, _, err = cli(["refine", failed.parent_run_id], capsys)
    assert code == 2 and err.count("\n") == 1 and "all failed" in err


@pytest.mark.slow
def test_refine_through_mlflow_run(frame, tracking_store):
    from mlflow_dl import sweep_model

    frame.to_csv("rows.csv", index=False)
    # absolute paths: `mlflow run` starts the command in the project's folder
    coarse = sweep_model(os.path.abspath("user_model.py") + ":build", {"units": [2, 8, 32]}, os.path.abspath("rows.csv"),
                         target="y", epochs=1, progress=False, experiment="by-mlflow-run")
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_store, "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-m", "mlflow", "run", REPO, "-e", "refine", "--env-manager", "local",
                           "--experiment-name", "by-mlflow-run", "-P", f"parent={coarse.parent_run_id}",
                           "-P", "trials=1"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (refined,) = [r for r in all_runs() if r.data.tags.get(REFINES_TAG) == coarse.parent_run_id]
    assert refined.data.tags["mlflow.project.entryPoint"] == "refine" and refined.info.status == "FINISHED"
    assert len(children(refined.info.run_id)) == 1
    assert len(table_of(refined.info.run_id)) == 4
