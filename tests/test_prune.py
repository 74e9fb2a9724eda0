"""Pruning a sweep's losing trials by Optuna's rule: tags, artifacts, the parent's table and plots."""

import mlflow
import pandas as pd
import pytest

from conftest import all_runs
from mlflow_dl.cli import main
from mlflow_dl.config import FitSpec, ModelSpec
from mlflow_dl.families import sweep
from mlflow_dl.tags import PRUNED_REASON_TAG as REASON_TAG, PRUNED_TAG
from mlflow_dl.training.pruning import PruneSpec

# lr=5 (Adam) on a sigmoid output saturates: its val_loss stays far above the others' after the first epoch
GRID = dict(lrs="0.01,0.003,5")
TINY = dict(model=ModelSpec(hidden="8"), fit=FitSpec(epochs=4, patience=None))
EAGER = PruneSpec(warmup=1, startup=1)


def children_of(parent_id):
    return {r.info.run_name: r for r in all_runs() if r.data.tags.get("mlflow.parentRunId") == parent_id}


def parent_table(parent_id):
    return pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent_id, artifact_path="results.csv"))


def check_pruned_sweep(result):
    children = children_of(result.parent_run_id)
    diverging = children["lr=5"]
    assert diverging.info.status == "FINISHED"
    stop = int(diverging.data.tags[PRUNED_TAG])
    assert 1 <= stop < 3, stop  # judged after the warm-up, stopped before the last epoch
    assert "fell behind" in diverging.data.tags[REASON_TAG] and "MedianPruner" in diverging.data.tags[REASON_TAG]
    history = mlflow.MlflowClient().get_metric_history(diverging.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == list(range(stop + 1))  # every epoch it trained, no more
    client = mlflow.MlflowClient()
    assert {f.path for f in client.list_artifacts(diverging.info.run_id, "checkpoints")} == {"checkpoints/best.keras"}
    assert mlflow.pyfunc.load_model(f"runs:/{diverging.info.run_id}/model") is not None
    assert PRUNED_TAG not in children["lr=0.01"].data.tags
    parent = mlflow.get_run(result.parent_run_id)
    table = parent_table(result.parent_run_id)
    row = table[table["trial"] == "lr=5"].iloc[0]
    assert row["pruned_at_epoch"] == stop and row["epochs_trained"] == stop + 1 and row["status"] == "FINISHED"
    assert parent.data.tags["best_run_id"] != diverging.info.run_id
    m = parent.data.metrics
    assert m["epochs_trained"] == table["epochs_trained"].sum() < m["epochs_full_grid"] == 12
    assert m["n_pruned"] >= 1
    plots = {f.path for f in client.list_artifacts(result.parent_run_id, "plots")}
    assert {"plots/loss_vs_swept_value.png", "plots/val_loss_curves.png"} <= plots
    return diverging


def test_a_diverging_learning_rate_is_pruned_and_keeps_what_it_trained(tracking_store):
    result = sweep("learning_rate", progress=False, prune=EAGER, **TINY, **GRID)
    check_pruned_sweep(result)
    assert mlflow.get_run(result.parent_run_id).data.params["sweep.prune"].startswith("optuna MedianPruner")


def test_pruning_with_two_workers(tracking_store):
    # the store made first: a worker and this process both creating a new SQLite store's tables race
    # in MLflow's migrations (the same holds without pruning)
    mlflow.MlflowClient().search_experiments()
    result = sweep("learning_rate", progress=False, prune=EAGER, workers=2, **TINY, **GRID)
    check_pruned_sweep(result)


def cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_prune_on_the_cli_and_bad_settings(tracking_store, capsys):
    code, out, err = cli(["sweep", "learning_rate", "--lrs", "0.01,5", "--hidden", "8", "--epochs", "4",
                          "--patience", "none", "--prune", "--prune-warmup", "1", "--prune-startup", "1"], capsys)
    assert code == 0, err
    assert "pruned_at_epoch" in out
    (parent,) = [r for r in all_runs() if "mlflow.parentRunId" not in r.data.tags]
    assert PRUNED_TAG in children_of(parent.info.run_id)["lr=5"].data.tags
    code, _, err = cli(["sweep", "learning_rate", "--lrs", "0.01", "--prune", "--prune-warmup", "0"], capsys)
    assert code == 2 and err.count("\n") == 1 and "prune_warmup=0" in err


def test_tune_prunes_by_the_same_rule(tmp_path, tracking_store):
    from mlflow_dl.config import DataSpec
    from mlflow_dl.sweeps.tuning import tune

    (tmp_path / "space.yaml").write_text("layers: 1\nnodes: 8\nlr: [0.01, 0.003, 5.0]\ndropout: 0\nl1: 0\nl2: 0\n")
    result = tune(DataSpec(), tuner="grid", max_trials=3, epochs=4, space=str(tmp_path / "space.yaml"),
                  search_id="pruned", echo=lambda _: None, prune=EAGER)
    children = {r.data.params["hp.lr"]: r for r in all_runs()
                if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id}
    diverging = children["5.0"]
    assert diverging.info.status == "FINISHED" and 1 <= int(diverging.data.tags[PRUNED_TAG]) < 3
    assert PRUNED_TAG not in children["0.01"].data.tags
    assert result.best_run_id != diverging.info.run_id
    table = parent_table(result.parent_run_id)
    assert table["pruned_at_epoch"].notna().sum() >= 1
    assert mlflow.get_run(result.parent_run_id).data.tags["tune.prune"].startswith("optuna MedianPruner")
