"""B7: what the MLflow bridge adds per keras-tuner trial (goal <= 1.10).

Same search in both arms, one process each, interleaved: RandomSearch over the
default MLP space on breast_cancer (same split, seed, trials and epochs).
  bare:      keras-tuner alone (its own checkpoints and state, nothing tracked)
  mlflow-dl: `mlflow_dl.sweeps.tuning.tune` to a real `mlflow server` (SQLite) on loopback:
             a child run per trial with curves, checkpoint, plots and servable model,
             then the parent's summary (results, best model on test, plots).
  autolog:   the bare arm's own search after `mlflow_dl.autolog()` (a user's search), to the same
             server: a child per trial with the same files, the parent's summary (no test split).
Each arm is timed from loading the data to the end of the search (for mlflow-dl:
the parent FINISHED with its summary). Last line: per-trial ratio.

Both arms skip keras-tuner's per-trial `import tensorboard` (not installed with
tensorflow 2.21; keras-tuner needs it only for a TensorBoard callback).

    python bench/tuner_overhead.py [--repeats 3] [--trials 5] [--epochs 20] [--quick]

--quick (1 repeat, 2 trials of 2 epochs) checks that every arm runs; its ratios mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ARMS = ("bare", "mlflow-dl", "autolog")


def bare(trials: int, epochs: int, uri: str | None = None) -> float:
    """keras-tuner alone; with `uri`, the same search under mlflow_dl.autolog() logging there."""
    import keras_tuner as kt

    from mlflow_dl.config import DataSpec, FitSpec, TrialSpec
    from mlflow_dl.data.datasets import load_dataset
    from mlflow_dl.data.split import split_and_scale
    from mlflow_dl.sweeps import search_space as space
    from mlflow_dl.models.mlp import build_mlp

    started = time.perf_counter()
    if uri is not None:
        import mlflow

        import mlflow_dl

        mlflow.set_tracking_uri(uri)
        mlflow_dl.autolog()
    data = DataSpec("breast_cancer")
    splits = split_and_scale(load_dataset("breast_cancer"), data)
    base = TrialSpec(data=data, fit=FitSpec(epochs=epochs, patience=None))

    def build(hp):
        spec = space.mlp_spec(base, space.declare(hp, space.MLP_SPACE))
        return build_mlp(spec.model, splits.x_train.shape[1], splits.preprocessing.task, 0, spec.fit.lr)

    class Bare(kt.RandomSearch):
        def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
            pass

    with tempfile.TemporaryDirectory() as tmp:
        tuner = Bare(build, objective="val_loss", max_trials=trials, seed=data.seed, directory=tmp, project_name="b7")
        tuner.search(splits.x_train, splits.y_train, validation_data=(splits.x_val, splits.y_val), epochs=epochs,
                     batch_size=32, verbose=0)
        assert len(tuner.oracle.trials) == trials
        seconds = time.perf_counter() - started
        if uri is not None:  # the parent of this search (its project folder), summarised
            import mlflow

            (parent,) = mlflow.search_runs(filter_string=f"tags.`tuner/project_dir` = '{os.path.join(tmp, 'b7')}'",
                                           output_format="list", search_all_experiments=True)
            assert parent.info.status == "FINISHED" and parent.data.metrics["n_finished"] == trials, parent.data
    return seconds


def bridged(trials: int, epochs: int, uri: str) -> float:
    import mlflow

    from mlflow_dl.config import DataSpec
    from mlflow_dl.sweeps.tuning import tune

    mlflow.set_tracking_uri(uri)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = tune(DataSpec("breast_cancer"), tuner="random", max_trials=trials, epochs=epochs,
                      directory=tmp, experiment="b7", echo=lambda _: None)
        seconds = time.perf_counter() - started
    parent = mlflow.MlflowClient().get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and len(result.table) == trials, (parent.info.status, len(result.table))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 2 trials of 2 epochs: every arm runs")
    parser.add_argument("--arm", choices=ARMS)
    parser.add_argument("--uri")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.trials, args.epochs = 1, 2, 2
    if args.arm:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        if args.arm == "mlflow-dl":
            seconds = bridged(args.trials, args.epochs, args.uri)
        else:
            seconds = bare(args.trials, args.epochs, args.uri if args.arm == "autolog" else None)
        print(json.dumps({"seconds": seconds}))
        return
    from _server import mlflow_server

    times = {arm: [] for arm in ARMS}
    with mlflow_server() as uri:
        for rep in range(args.repeats):
            for arm in ARMS:
                proc = subprocess.run([sys.executable, __file__, "--arm", arm, "--uri", uri, "--trials", str(args.trials),
                                       "--epochs", str(args.epochs)], capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"{arm} arm failed:\n{proc.stderr[-3000:]}")
                times[arm].append(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])
                print(f"rep {rep + 1} {arm}: {times[arm][-1]:.2f}s ({times[arm][-1] / args.trials:.2f}s per trial)",
                      flush=True)
    per_trial = {arm: statistics.median(v) / args.trials for arm, v in times.items()}
    print(f"tuner_overhead ratio={per_trial['mlflow-dl'] / per_trial['bare']:.2f} "
          f"(mlflow-dl {per_trial['mlflow-dl']:.2f}s / bare keras-tuner {per_trial['bare']:.2f}s per trial, "
          f"{args.trials} trials x {args.epochs} epochs, median of {args.repeats})")
    print(f"autolog_tuner_overhead ratio={per_trial['autolog'] / per_trial['bare']:.2f} "
          f"(autologged user search {per_trial['autolog']:.2f}s / bare keras-tuner {per_trial['bare']:.2f}s per trial, "
          f"{args.trials} trials x {args.epochs} epochs, median of {args.repeats})")


if __name__ == "__main__":
    main()
