"""A keras-tuner search's runs in MLflow: the tags that tie them together, its parent found again, its summary.

`mlflow-dl tune` (sweeps/tuning.py) and a user's own search under autolog (sweeps/user_search.py) share them.
The summary is read back from MLflow, so resumed and other workers' trials are in it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile

import mlflow
import pandas as pd

from mlflow_dl.sweeps import compare
from mlflow_dl.sweeps.trial_specs import Axis
from mlflow_dl.delivery import runs
from mlflow_dl.fit import plots
from mlflow_dl.tags import PRUNED_TAG

FAMILY = "tune"
SEARCH_TAG = "mlflow_dl.search_id"
TRIAL_TAG = "tuner/trial_id"
STATUS_TAG = "tuner/status"
HYPERBAND_TAGS = ("tuner/bracket", "tuner/round", "tuner/epochs")
EXECUTION_TAG = "tuner/execution"  # a user's search, executions_per_trial > 1: each execution's run
PROJECT_TAG = "tuner/project_dir"  # a user's search: its parent names keras-tuner's project folder
AXIS = Axis(key=None, label="trial")


# -- the parent run -------------------------------------------------------------
def find_parent(search_id: str, experiment_id: str, autologged: bool = False):
    """The parent run of a search, found by its tag (None if the search is new): the earliest run tagged with
    the search id that is no trial's or execution's run. `autologged`: a user's search under autolog, whose
    parent names its project folder (and may be nested in the user's run); else one of `mlflow-dl tune`."""
    where = [f"tags.`{SEARCH_TAG}` = '{search_id}'", f"tags.`{runs.FAMILY_TAG}` = '{FAMILY}'",
             f"tags.`{TRIAL_TAG}` IS NULL", f"tags.`{EXECUTION_TAG}` IS NULL",
             f"tags.`{PROJECT_TAG}` IS {'NOT ' if autologged else ''}NULL"]
    # asked of the server, earliest first: the trials share the search's tags and far outnumber the parent
    found = mlflow.MlflowClient().search_runs([experiment_id], filter_string=" and ".join(where),
                                              order_by=["attributes.start_time ASC"], max_results=1)
    return found[0] if found else None


# -- the parent's summary ---------------------------------------------------------
def children_table(parent_id: str, experiment_id: str) -> tuple[pd.DataFrame, dict[str, dict]]:
    """One row per child (every invocation, every worker) and each child's val_loss curve."""
    client = mlflow.MlflowClient()
    children = client.search_runs([experiment_id], filter_string=f"tags.`{runs.PARENT_TAG}` = '{parent_id}'",
                                  max_results=5000)
    rows, histories = [], {}
    for r in sorted(children, key=lambda r: r.data.tags.get(TRIAL_TAG, "")):
        rows.append(child_row(r.info.run_id, r.info.status, r.data.metrics, r.data.params, r.data.tags))
        histories[rows[-1]["trial"]] = {"val_loss": [
            x.value for x in sorted(client.get_metric_history(r.info.run_id, "val_loss"), key=lambda x: x.step)]}
    return pd.DataFrame(rows), histories


def child_row(run_id: str, status: str, metrics: dict, params: dict, tags: dict) -> dict:
    """A child's row of the search's table (from MLflow, or from what the bridge kept of a trial it ended)."""
    return {
        "trial": f"trial {tags.get(TRIAL_TAG, '?')}", "trial_id": tags.get(TRIAL_TAG),
        **{k[3:]: v for k, v in sorted(params.items()) if k.startswith("hp.")},
        **{k: tags[k] for k in HYPERBAND_TAGS if k in tags},
        "model_val_loss": metrics.get("model_val_loss", float("nan")),
        "best_val_loss": metrics.get("best_val_loss", float("nan")),
        "best_epoch": metrics.get("best_epoch", float("nan")),
        "train_loss_at_best": metrics.get("best_epoch_loss", float("nan")),
        "total_params": float(params.get("model.total_params", "nan")),
        "status": status, "tuner_status": tags.get(STATUS_TAG, ""),
        "pruned_at_epoch": float(tags.get(PRUNED_TAG, "nan")),
        "error": tags.get(runs.ERROR_TAG, ""), "run_id": run_id,
    }


def _best_child(tuner, finished: pd.DataFrame) -> pd.Series | None:
    """keras-tuner's best trial (its objective, its direction) among the finished children; the lowest
    model_val_loss (compare.best_row) when keras-tuner names none of them."""
    try:
        best_trials = tuner.oracle.get_best_trials(1)
    except Exception:  # noqa: BLE001 - an oracle without scores: fall back to val_loss
        best_trials = []
    ids = {t.trial_id for t in best_trials}
    kept = finished[finished["pruned_at_epoch"].isna()] if "pruned_at_epoch" in finished else finished
    finished = kept if len(kept) else finished  # a pruned trial is the best only when no other finished
    mine = finished[finished["trial_id"].isin(ids)]
    return mine.iloc[0] if len(mine) else compare.best_row(finished)


def summarize_search(tuner, parent_id: str, experiment_id: str,
                     children: tuple[pd.DataFrame, dict] | None = None) -> tuple[pd.DataFrame, str | None, dict]:
    """On the active parent run: results.csv, results_summary.txt, counts, `best_run_id`,
    best_hyperparameters.json and the comparison figures. Returns the table, the best child's
    run id and its hyper-parameters. `children`: the table and curves, when not read from MLflow."""
    table, histories = children or children_table(parent_id, experiment_id)
    finished = table[table["status"] == "FINISHED"] if len(table) else table
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(os.path.join(tmp, "results.csv"), index=False)
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            tuner.results_summary(num_trials=max(1, len(tuner.oracle.trials)))
        with open(os.path.join(tmp, "results_summary.txt"), "w") as f:
            f.write(text.getvalue())
        mlflow.log_artifacts(tmp)
    mlflow.log_metrics({"n_trials": len(table), "n_finished": len(finished),
                        "n_failed": int((table["status"] == "FAILED").sum()) if len(table) else 0})
    if not len(finished):
        return table, None, {}
    best = _best_child(tuner, finished)
    if best is None:
        return table, None, {}
    best_run_id = best["run_id"]
    mlflow.set_tag("best_run_id", best_run_id)
    trial = tuner.oracle.trials.get(best["trial_id"])
    values = trial.hyperparameters.values if trial is not None else {}
    mlflow.log_dict({k: v for k, v in values.items() if not k.startswith("tuner/")}, "best_hyperparameters.json")
    hp_columns = [h.name for h in tuner.oracle.hyperparameters.space if h.name in table.columns]
    figures, _ = compare.comparison_figures(table, histories, AXIS)
    figures.update(compare.value_figures(table, hp_columns))
    for artifact, fig in figures.items():
        mlflow.log_figure(fig, artifact)
        plots.close(fig)
    return table, best_run_id, values


def best_hyperparameters(parent_run_id: str) -> dict:
    """The best trial's hyper-parameters, as logged on the parent (`best_hyperparameters.json`)."""
    return json.loads(mlflow.artifacts.load_text(f"runs:/{parent_run_id}/best_hyperparameters.json"))
