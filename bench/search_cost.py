"""B9: compute to the same best. A user's own builder (two Dense layers, a dropout) swept as a 16-point grid
(2 widths x 4 learning rates, one of which diverges, x 2 dropout rates) on a CSV of 2,000 rows x 12 features,
30 epochs per trial, one worker.

Arms, each on its own fresh SQLite store, by the CLI a user types (`mlflow-dl sweep custom`, `mlflow-dl refine`):
  full     the 16-point grid
  pruned   the same grid with --prune (Optuna's MedianPruner, the defaults: warm-up a tenth of the epochs,
           after 2 finished trials)
  refined  a 4-point coarse grid (2 widths x 2 learning rates, no dropout), then `refine --trials 4`
For each: the epochs trained (the parents' `epochs_trained`), wall time, and the best `model_val_loss`.
Goal: pruned and coarse+refined each reach the full grid's best within 2% with at most 50% of its epochs.
Last line: pruned epochs / full-grid epochs, with the other arm's ratio and the three best values.

    python bench/search_cost.py [--repeats 1] [--epochs 30] [--prune-args "--prune-rule halving"]
    python bench/search_cost.py --quick    # 4-trial grid of 3 epochs on 300 rows: does every arm run?
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BUILDER = '''
import keras


def build(width=32, lr=0.001, dropout=0.0):
    """Two Dense layers and a dropout: the user's own model."""
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(width, activation="relu"),
                              keras.layers.Dropout(dropout), keras.layers.Dense(width, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    return model
'''


def cli() -> list[str]:
    exe = shutil.which("mlflow-dl", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "mlflow_dl"]


def make_data(folder: str, rows: int) -> str:
    """A nonlinear regression of 12 features, some noise; the same rows every invocation."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(rows, 12))
    y = (np.sin(x[:, 0]) * 2 + x[:, 1] * x[:, 2] + np.abs(x[:, 3]) - 0.5 * x[:, 4] ** 2 + x[:, 5:9] @ [1, -1, 0.5, 0.3]
         + rng.normal(0, 0.3, rows))
    path = os.path.join(folder, "rows.csv")
    pd.DataFrame(x, columns=[f"f{i}" for i in range(12)]).assign(y=y).to_csv(path, index=False)
    with open(os.path.join(folder, "b9_model.py"), "w") as f:
        f.write(BUILDER)
    return path


def run(args: list[str], cwd: str) -> tuple[float, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db", "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    proc = subprocess.run([*cli(), *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started, proc.stdout


def parent_figures(cwd: str, parent_id: str) -> tuple[int, float]:
    """(epochs trained by the parent's own trials, best model_val_loss of its table)."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{cwd}/mlflow.db")
    run = client.get_run(parent_id)
    best = client.get_run(run.data.tags["best_run_id"]).data.metrics["model_val_loss"]
    return int(run.data.metrics["epochs_trained"]), best


def sweep_args(data: str, grid: str, epochs: int, *extra: str) -> list[str]:
    return ["sweep", "custom", "--model", "b9_model.py:build", "--grid", grid, "--data", data, "--target", "y",
            "--epochs", str(epochs), "--patience", "none", *extra]


def parent_of(stdout: str) -> str:
    return re.search(r"parent run (\w+)", stdout).group(1)


def one_rep(rep: int, rows: int, epochs: int, grids: dict, refine_trials: int, prune_args: list[str]) -> dict:
    out = {}
    for arm in ("full", "pruned", "refined"):
        cwd = tempfile.mkdtemp(prefix=f"b9-{arm}-")
        try:
            data = make_data(cwd, rows)
            if arm == "refined":
                seconds, stdout = run(sweep_args(data, grids["coarse"], epochs), cwd)
                coarse = parent_of(stdout)
                coarse_epochs, _ = parent_figures(cwd, coarse)
                more, stdout = run(["refine", coarse, "--trials", str(refine_trials)], cwd)
                refined = parent_of(stdout)
                refine_epochs, best = parent_figures(cwd, refined)
                out[arm] = (coarse_epochs + refine_epochs, seconds + more, best)
            else:
                extra = ["--prune", *prune_args] if arm == "pruned" else []
                seconds, stdout = run(sweep_args(data, grids["full"], epochs, *extra), cwd)
                epochs_trained, best = parent_figures(cwd, parent_of(stdout))
                out[arm] = (epochs_trained, seconds, best)
        finally:
            shutil.rmtree(cwd, ignore_errors=True)
        print(f"rep {rep} {arm}: {out[arm][0]} epochs, {out[arm][1]:.1f}s, best model_val_loss {out[arm][2]:.4f}",
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--prune-args", default="", help="More options for the pruned arm, e.g. '--prune-rule halving'.")
    args = parser.parse_args()
    if args.quick:
        rows, epochs, repeats, refine_trials = 300, 3, 1, 1
        grids = {"full": "width=8;lr=1.0,0.01;dropout=0,0.2", "coarse": "width=8;lr=1.0,0.01"}
    else:
        rows, epochs, repeats, refine_trials = 2000, args.epochs, args.repeats, 4
        grids = {"full": "width=16,64;lr=1.0,0.01,0.001,0.0001;dropout=0,0.2",
                 "coarse": "width=16,64;lr=0.01,0.0001;dropout=0"}
    n_full = int(np.prod([len(part.split("=")[1].split(",")) for part in grids["full"].split(";")]))
    print(f"B9: {rows} rows x 12 features, {n_full}-trial grid x {epochs} epochs; pruned arm: --prune "
          f"{args.prune_args or '(defaults)'}; median of {repeats}", flush=True)
    reps = [one_rep(i + 1, rows, epochs, grids, refine_trials, args.prune_args.split()) for i in range(repeats)]

    def median(arm, i):
        return statistics.median(r[arm][i] for r in reps)

    full_epochs, pruned_epochs, refined_epochs = (median(a, 0) for a in ("full", "pruned", "refined"))
    bests = {a: median(a, 2) for a in ("full", "pruned", "refined")}
    for arm in ("full", "pruned", "refined"):
        gap = bests[arm] / bests["full"] - 1
        print(f"{arm}: {median(arm, 0):.0f} epochs ({median(arm, 0) / full_epochs:.0%} of the full grid's), "
              f"{median(arm, 1):.1f}s, best model_val_loss {bests[arm]:.4f} ({gap:+.1%} vs full)")
    for arm, epochs_used in (("pruned", pruned_epochs), ("refined", refined_epochs)):
        met = epochs_used <= 0.5 * full_epochs and bests[arm] <= 1.02 * bests["full"]
        print(f"goal {arm} (within 2% of the full grid's best, <= 50% of its epochs): {'met' if met else 'not met'}")
    print(f"search_cost ratio={pruned_epochs / full_epochs:.2f} (pruned {pruned_epochs:.0f} / full grid "
          f"{full_epochs:.0f} epochs; coarse+refine ratio={refined_epochs / full_epochs:.2f}; best model_val_loss "
          f"full {bests['full']:.4f}, pruned {bests['pruned']:.4f}, coarse+refine {bests['refined']:.4f}; "
          f"median of {repeats})")


if __name__ == "__main__":
    main()
