"""B2: a 12-trial regularization sweep (L1 and L2, 6 strengths each), 10 epochs each.

Arms, each on its own fresh SQLite store, repeated and interleaved:
  loop     a shell-style loop of `mlflow run . -e train --env-manager local -P l1=...` (one process per trial)
  inline   `mlflow-dl sweep regularization` in one process
  workers  the same with --workers 2
Also reports the sweep's own overhead, the time beyond the sum of the trials' fit_seconds as a share of
that sum (B2's goal: <= 10%), two ways: within the parent run's wall time (the sweep proper, from the
parent's start to its end), and within the command's (Python start, imports and a fresh store's schema
included).
And the ceiling any 2-process executor has on this machine: one process fitting the sweep's model
2K times alone with TensorFlow's default threads (as the inline sweep does), against two processes
fitting it K times each at once on one thread each (as 2 workers do); plain Keras, no MLflow. With the
inline sweep's start (its wall time before the parent run) that ceiling bounds the whole command.
Last line: loop time / inline time.

    python bench/sweep_throughput.py [--repeats 3] [--epochs 10]
    python bench/sweep_throughput.py --quick    # 1 repeat, 1 trial (L1) of 1 epoch: does every arm run?
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
    out = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} exited with {out.returncode}:\n{out.stderr[-3000:]}")
    return time.perf_counter() - started


def loop_arm(cwd, epochs, kind, strengths) -> float:
    total = 0.0
    for penalty in ("l1", "l2") if kind == "both" else (kind,):
        for s in strengths:
            total += run([sys.executable, "-m", "mlflow", "run", REPO, "-e", "train", "--env-manager", "local",
                          "--experiment-name", "b2-loop", "-P", f"{penalty}={s}", "-P", f"epochs={epochs}",
                          "-P", "patience=none"], cwd)
    return total


def fit_loop(fits: int, epochs: int, ready_dir: str, together: int, threads: int) -> float:
    """The sweep's default model fitted `fits` times on `threads` TensorFlow threads (0: TensorFlow's
    default), Grappler off as in mlflow-dl's processes; timed from the moment all `together` processes
    have done their imports (each marks itself ready in `ready_dir`), so they fit at the same time."""
    os.environ.update(TF_CPP_MIN_LOG_LEVEL="2", MLFLOW_DL_GRAPPLER="off")
    from mlflow_dl.runtime import tf_runtime
    from mlflow_dl.sweeps.executors import share_cores

    tf_runtime.apply_grappler_choice()
    if threads:
        share_cores(threads)  # as a worker divides the cores
    import keras

    from mlflow_dl.config import DataSpec, ModelSpec
    from mlflow_dl.data.datasets import load_dataset
    from mlflow_dl.data.split import split_and_scale
    from mlflow_dl.models.mlp import build_mlp

    splits = split_and_scale(load_dataset("breast_cancer"), DataSpec("breast_cancer"))
    open(os.path.join(ready_dir, str(os.getpid())), "w").close()
    deadline = time.time() + 600
    while len(os.listdir(ready_dir)) < together and time.time() < deadline:
        time.sleep(0.01)
    started = time.perf_counter()
    for i in range(fits):
        keras.utils.set_random_seed(i)
        model = build_mlp(ModelSpec(), splits.x_train.shape[1], "binary", 2, 1e-3)
        model.fit(splits.x_train, splits.y_train, validation_data=(splits.x_val, splits.y_val), epochs=epochs,
                  batch_size=32, verbose=0)
        keras.backend.clear_session(free_memory=False)
    return time.perf_counter() - started


def parallel_ceiling(fits: int, epochs: int) -> float:
    """(2K fits in one process, default threads) / (K fits in each of two 1-thread processes at once):
    what 2 workers can gain over inline at best, on fitting alone."""
    def seconds(n, k, threads):
        with tempfile.TemporaryDirectory() as ready:
            procs = [subprocess.Popen([sys.executable, __file__, "--fit-loop", str(k), "--epochs", str(epochs),
                                       "--threads", str(threads), "--ready-dir", ready, "--together", str(n)],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                     for _ in range(n)]
            return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]

    (alone,) = seconds(1, 2 * fits, 0)
    together = seconds(2, fits, 1)  # both start fitting at once, after their imports
    return alone / max(together)


def sweep_arm(cwd, epochs, workers, kind, strengths) -> tuple[float, float, float]:
    wall = run([*cli(), "sweep", "regularization", "--kind", kind, "--strengths", ",".join(map(str, strengths)),
                "--epochs", str(epochs), "--patience", "none", "--workers", str(workers)], cwd)
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{cwd}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=100)
    fits = sum(r.data.metrics.get("fit_seconds", 0.0) for r in runs if "mlflow.parentRunId" in r.data.tags)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return wall, fits, (parent.info.end_time - parent.info.start_time) / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fit-loop", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ready-dir", help=argparse.SUPPRESS)
    parser.add_argument("--together", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 1 trial of 1 epoch: every arm runs")
    args = parser.parse_args()
    if args.fit_loop:
        print(fit_loop(args.fit_loop, args.epochs, args.ready_dir, args.together, args.threads))
        return
    kind, strengths, ceiling_fits = "both", STRENGTHS, 6
    if args.quick:  # a check that the benchmark runs; its figures mean nothing
        args.repeats, args.epochs, kind, strengths, ceiling_fits = 1, 1, "l1", STRENGTHS[:1], 1
    times = {"loop": [], "inline": [], "workers": []}
    overhead, in_parent, parents = [], [], {"inline": [], "workers": []}
    for rep in range(args.repeats):
        for arm in times:
            with tempfile.TemporaryDirectory() as cwd:
                if arm == "loop":
                    times[arm].append(loop_arm(cwd, args.epochs, kind, strengths))
                else:
                    wall, fits, parent = sweep_arm(cwd, args.epochs, 1 if arm == "inline" else 2, kind, strengths)
                    times[arm].append(wall)
                    parents[arm].append(parent)
                    if arm == "inline":
                        overhead.append((wall - fits) / fits)
                        in_parent.append((parent - fits) / fits)
            print(f"rep {rep + 1} {arm}: {times[arm][-1]:.1f}s", flush=True)
    ceiling = parallel_ceiling(ceiling_fits, args.epochs)
    med = {arm: statistics.median(v) for arm, v in times.items()}
    parent = {arm: statistics.median(v) for arm, v in parents.items()}
    start = med["inline"] - parent["inline"]  # Python, imports, a fresh store: before the parent run starts
    print(f"workers=2 speed-up over inline: {med['inline'] / med['workers']:.2f}x "
          f"({med['workers']:.1f}s vs {med['inline']:.1f}s; parent runs {parent['workers']:.1f}s vs "
          f"{parent['inline']:.1f}s: {parent['inline'] / parent['workers']:.2f}x)")
    print(f"ceiling on this machine: {ceiling:.2f}x on fitting alone (2 one-thread fit loops at once vs one "
          f"default-thread loop); with the inline command's {start:.1f}s before its parent run, at most "
          f"{med['inline'] / (start + parent['inline'] / ceiling):.2f}x for the command")
    print(f"inline sweep overhead, its time beyond the sum of the trials' fit times, as a share of that sum: "
          f"{100 * statistics.median(in_parent):.1f}% in the parent run, {100 * statistics.median(overhead):.1f}% "
          "in the whole command")
    print(f"sweep_throughput ratio={med['loop'] / med['inline']:.2f} "
          f"(loop {med['loop']:.1f}s / inline {med['inline']:.1f}s, median of {args.repeats})")


if __name__ == "__main__":
    main()
