"""B8: what logging model_summary.txt and plots/model.png adds to a tracked fit.

The breast-cancer MLP 128-64-32-1 of B1 (and a 3-input Functional model),
`epochs` epochs, MlflowCallback into an embedded SQLite store. Arms, interleaved
in one process: the callback as shipped, and the same callback with its
architecture step turned off (the baseline). Each is timed from the start of
`fit` to its return (the callback uploads everything before fit returns).
Last line: the ratio of the medians.

    python bench/architecture_logging.py [--repeats 3] [--epochs 20]
    python bench/architecture_logging.py --quick    # 1 repeat of 2 epochs, no warm-up: does it run?
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="1 repeat of 2 epochs, no warm-up: a check that it runs")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.epochs = 1, 2

    import keras
    import mlflow
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import MinMaxScaler

    from mlflow_dl.config import ModelSpec
    from mlflow_dl.models.multi_input import build_multi_input
    from mlflow_dl.fit.callback import MlflowCallback

    class WithoutArchitecture(MlflowCallback):
        def _log_architecture(self):  # the baseline: everything else as shipped
            return None

    tmp = tempfile.mkdtemp()
    mlflow.set_tracking_uri(f"sqlite:///{os.path.join(tmp, 'mlflow.db')}")
    mlflow.set_experiment("b8")
    x, y = load_breast_cancer(return_X_y=True)
    x = MinMaxScaler().fit_transform(x).astype("float32")
    groups = {"mean": x[:, :10], "error": x[:, 10:20], "worst": x[:, 20:]}

    def mlp():
        hidden = [keras.layers.Dense(n, activation="relu") for n in (128, 64, 32)]
        model = keras.Sequential([keras.Input((30,)), *hidden, keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
        return model, x

    def multi():
        return build_multi_input({k: 10 for k in groups}, 32, ModelSpec(hidden=(64, 32)), "binary"), groups

    times: dict[tuple[str, str], list[float]] = {}
    warm = 0 if args.quick else 1  # the first round warms up and is not counted (--quick: no warm-up)
    for repeat in range(1 - warm, args.repeats + 1):
        for name, build in (("mlp", mlp), ("multi_input", multi)):
            for arm, callback in (("without", WithoutArchitecture), ("with", MlflowCallback)):
                keras.utils.set_random_seed(42)
                model, inputs = build()
                started = time.perf_counter()
                model.fit(inputs, y, validation_split=0.2, epochs=args.epochs, batch_size=32, verbose=0,
                          callbacks=[callback(log_model=False)])
                if repeat:
                    times.setdefault((name, arm), []).append(time.perf_counter() - started)
                keras.backend.clear_session()
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in ("mlp", "multi_input"):
        print(f"{name}: with {med[(name, 'with')]:.2f}s, without {med[(name, 'without')]:.2f}s "
              f"(+{med[(name, 'with')] - med[(name, 'without')]:.2f}s)", file=sys.stderr)
    ratio = med[("mlp", "with")] / med[("mlp", "without")]
    print(f"architecture_logging ratio={ratio:.2f} (mlp {med[('mlp', 'with')]:.2f}s / {med[('mlp', 'without')]:.2f}s; "
          f"multi_input {med[('multi_input', 'with')]:.2f}s / {med[('multi_input', 'without')]:.2f}s; "
          f"median of {args.repeats}, {args.epochs} epochs)")


if __name__ == "__main__":
    main()
