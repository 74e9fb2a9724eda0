"""B1: what tracking adds to a 50-epoch fit (see ../shared/BENCHMARKS.md).

Arms, one process each, interleaved, against a real `mlflow server` (SQLite) on
loopback: plain `model.fit`; stock `mlflow.keras.autolog()` with its defaults (its model
logged, pip requirements inferred); stock `mlflow.keras.autolog(log_models=False)`
(autolog-nomodel: its params, metrics and dataset, no model: less than mlflow-dl logs);
mlflow-dl's autolog with everything it logs by default. Each arm is a user's own
process: nothing in it is mlflow-dl's to tune (no heap freezing, no Keras or
TensorFlow globals touched). Each arm is timed from the start of `fit` until a second
client sees the run complete (FINISHED, all epochs' metrics, and for mlflow-dl the
model). Last line: the ratio.
A fifth arm, plain-once, is the plain fit with the one change MlflowCallback makes
to Keras' training (tf_runtime.trace_train_step_once: the train step traced once,
not twice), so that what tracking itself costs is printed too: mlflow-dl / plain-once.

    python bench/tracking_overhead.py [--repeats 5] [--epochs 50]
    python bench/tracking_overhead.py --quick    # one repeat of 3 epochs: does every arm run?
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ARMS = ("plain", "autolog", "autolog-nomodel", "mlflow-dl", "plain-once")
STOCK = ("autolog", "autolog-nomodel")


def run_arm(arm: str, uri: str, epochs: int) -> float:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import time

    import keras
    import mlflow
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import MinMaxScaler

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(f"b1-{arm}")
    x, y = load_breast_cancer(return_X_y=True)
    x = MinMaxScaler().fit_transform(x).astype("float32")
    keras.utils.set_random_seed(42)
    model = keras.Sequential([keras.Input((x.shape[1],))] + [keras.layers.Dense(n, activation="relu") for n in (128, 64, 32)]
                             + [keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    callbacks = []
    if arm == "autolog":
        mlflow.keras.autolog()
    elif arm == "autolog-nomodel":
        mlflow.keras.autolog(log_models=False)
    elif arm == "mlflow-dl":
        import mlflow_dl

        mlflow_dl.autolog()
    elif arm == "plain-once":
        from mlflow_dl.runtime import tf_runtime

        callbacks = [keras.callbacks.LambdaCallback(on_train_begin=lambda logs: tf_runtime.trace_train_step_once(model))]
    started = time.perf_counter()
    model.fit(x, y, validation_split=0.2, epochs=epochs, batch_size=32, verbose=0, callbacks=callbacks)
    if arm in (*STOCK, "mlflow-dl"):
        run_id = mlflow.last_active_run().info.run_id
        client = mlflow.MlflowClient(uri)  # a second client: is the run complete on the server?
        run = client.get_run(run_id)
        points = len(client.get_metric_history(run_id, "val_loss"))
        models = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id='{run_id}'")
        finished = time.perf_counter() - started
        # stock autolog in mlflow 3.17 can end FAILED on this server (duplicate logged_model_metrics rows):
        # its time is still reported, its status printed; mlflow-dl's run must be complete.
        if arm == "mlflow-dl":
            assert run.info.status == "FINISHED" and points == epochs and models, (run.info.status, points, models)
        print(f"{arm}: status={run.info.status} val_loss points={points} logged models={len(models)}", file=sys.stderr)
        return finished
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="one repeat of 3 epochs (a check that every arm runs)")
    parser.add_argument("--arm", choices=ARMS)
    parser.add_argument("--uri")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.epochs = 1, 3
    if args.arm:
        print(json.dumps({"seconds": run_arm(args.arm, args.uri, args.epochs)}))
        return
    from _server import mlflow_server

    times = {arm: [] for arm in ARMS}
    with mlflow_server() as uri:
        for rep in range(args.repeats):
            for arm in ARMS:
                proc = subprocess.run([sys.executable, __file__, "--arm", arm, "--uri", uri, "--epochs", str(args.epochs)],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"{arm} arm failed:\n{proc.stderr[-3000:]}")
                times[arm].append(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])
                status = [line for line in proc.stderr.splitlines() if line.startswith(f"{arm}: status=")]
                print(f"rep {rep + 1} {arm}: {times[arm][-1]:.2f}s {status[-1] if status else ''}", flush=True)
    med = {arm: statistics.median(v) for arm, v in times.items()}
    print(f"stock autolog: {med['autolog']:.2f}s = {med['autolog'] / med['plain']:.2f}x plain; "
          f"with log_models=False: {med['autolog-nomodel']:.2f}s = {med['autolog-nomodel'] / med['plain']:.2f}x plain")
    print(f"tracking alone: mlflow-dl / plain with the train step traced once = "
          f"{med['mlflow-dl'] / med['plain-once']:.2f} (plain-once {med['plain-once']:.2f}s)")
    print(f"tracking_overhead ratio={med['mlflow-dl'] / med['plain']:.2f} "
          f"(mlflow-dl {med['mlflow-dl']:.2f}s / plain {med['plain']:.2f}s, median of {args.repeats})")


if __name__ == "__main__":
    main()
