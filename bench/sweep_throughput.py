"""B2: a 12-trial regularization sweep (L1 and L2, 6 strengths each), 10 epochs each.

Arms, each on its own fresh SQLite store, repeated and interleaved:
  loop     a shell-style loop of `mlflow run . -e train --env-manager local -P l1=...` (one process per trial)
  inline   `mlflow-dl sweep regularization` in one process
  workers  the same with --workers 2
Also reports the sweep's own overhead: wall time minus the sum of the trials' fit_seconds.
Last line: loop time / inline time.

    python bench/sweep_throughput.py [--repeats 3] [--epochs 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRENGTHS = [float(s) for s in np.logspace(-4, -1, 6)]


def cli() -> list[str]:
    exe = shutil.which("mlflow-dl", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "mlflow_dl"]


def run(cmd, cwd) -> float:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db", "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def loop_arm(cwd, epochs) -> float:
    total = 0.0
    for kind in ("l1", "l2"):
        for s in STRENGTHS:
            total += run([sys.executable, "-m", "mlflow", "run", REPO, "-e", "train", "--env-manager", "local",
                          "--experiment-name", "b2-loop", "-P", f"{kind}={s}", "-P", f"epochs={epochs}",
                          "-P", "patience=none"], cwd)
    return total


def sweep_arm(cwd, epochs, workers) -> tuple[float, float]:
    wall = run([*cli(), "sweep", "regularization", "--kind", "both", "--strengths", ",".join(map(str, STRENGTHS)),
                "--epochs", str(epochs), "--patience", "none", "--workers", str(workers)], cwd)
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{cwd}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=100)
    fits = sum(r.data.metrics.get("fit_seconds", 0.0) for r in runs if "mlflow.parentRunId" in r.data.tags)
    return wall, fits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    times = {"loop": [], "inline": [], "workers": []}
    overhead = []
    for rep in range(args.repeats):
        for arm in times:
            with tempfile.TemporaryDirectory() as cwd:
                if arm == "loop":
                    times[arm].append(loop_arm(cwd, args.epochs))
                else:
                    wall, fits = sweep_arm(cwd, args.epochs, 1 if arm == "inline" else 2)
                    times[arm].append(wall)
                    if arm == "inline":
                        overhead.append((wall - fits) / fits)
            print(f"rep {rep + 1} {arm}: {times[arm][-1]:.1f}s", flush=True)
    med = {arm: statistics.median(v) for arm, v in times.items()}
    print(f"workers=2 speed-up over inline: {med['inline'] / med['workers']:.2f}x "
          f"({med['workers']:.1f}s vs {med['inline']:.1f}s)")
    print(f"inline sweep overhead beyond the trials' fit time: {100 * statistics.median(overhead):.0f}%")
    print(f"sweep_throughput ratio={med['loop'] / med['inline']:.2f} "
          f"(loop {med['loop']:.1f}s / inline {med['inline']:.1f}s, median of {args.repeats})")


if __name__ == "__main__":
    main()
