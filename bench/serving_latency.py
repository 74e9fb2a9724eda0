"""B6: latency of the served champion against the stock keras flavour (../shared/BENCHMARKS.md).

One breast-cancer MLP 128-64-32-1 is trained by mlflow-dl and promoted (alias
champion); the same Keras weights are logged again with the stock flavour
(`mlflow.keras.log_model`, input = the scaled matrix it was trained on) and registered
as a second model with its own champion alias. Both are served by
`mlflow models serve --env-manager local` on loopback at the same time. Per repeat and
arm, interleaved: 500 sequential one-row requests and 50 requests of 1,000 rows.
Last line: stock p50 / mlflow-dl p50 for one row.

    python bench/serving_latency.py [--repeats 3] [--epochs 20]
    python bench/serving_latency.py --quick   # seconds: does it still run? (tests/test_bench.py)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def scoring_server(model_uri: str, env: dict):
    from _server import free_port, wait_http

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager",
                             "local", "-h", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/ping", proc, f"scoring server for {model_uri}", timeout=180)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def post(url: str, body: bytes) -> float:
    req = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as resp:
        resp.read()
        assert resp.status == 200
    return time.perf_counter() - started


def split(frame) -> bytes:
    return json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}).encode()


def tensor(frame) -> bytes:
    return json.dumps({"inputs": frame.to_numpy().tolist()}).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat, 1 epoch, 20 one-row and 3 requests of 100 rows: checks that it runs, "
                             "its figures mean nothing")
    args = parser.parse_args()
    one_row, big_requests, big_rows, warm = (20, 3, 100, 2) if args.quick else (500, 50, 1000, 5)
    if args.quick:
        args.repeats, args.epochs = 1, 1
    import keras
    import mlflow
    import numpy as np
    import pandas as pd

    from mlflow_dl.config import DataSpec, FitSpec, TrialSpec
    from mlflow_dl.data.datasets import load_dataset
    from mlflow_dl.data.preprocessing import Preprocessing
    from mlflow_dl.families.train import train
    from mlflow_dl.registry.promotion import promote
    from mlflow_dl.fit.model_logging import KERAS_FILE, pip_requirements

    root = tempfile.mkdtemp(prefix="b6-")
    uri = f"sqlite:///{root}/mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    result = train(TrialSpec(data=DataSpec("breast_cancer"), fit=FitSpec(epochs=args.epochs, patience=5)),
                   experiment="b6")
    promote("b6", "b6-mlflow-dl")
    # the same weights, logged with the stock flavour (it sees the scaled matrix, no preprocessing)
    model_dir = mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/model", dst_path=root)
    kmodel = keras.saving.load_model(f"{model_dir}/artifacts/{KERAS_FILE}", safe_mode=True)
    with open(f"{model_dir}/artifacts/preprocessing.json") as f:
        prep = Preprocessing.from_json(f.read())
    raw = load_dataset("breast_cancer").X
    scaled = pd.DataFrame(prep.transform(raw), columns=[f"x{i}" for i in range(raw.shape[1])])
    with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name("b6").experiment_id, run_name="stock"):
        # (input_example= makes mlflow.keras.save_model fail in mlflow 3.17: the folder is not there yet)
        # the keras flavour needs a tensor signature, so the stock arm gets {"inputs": [[...]]} requests
        example = scaled.head(5).to_numpy()
        signature = mlflow.models.infer_signature(example, kmodel.predict_on_batch(example))
        # (explicit pins, as mlflow-dl's: inferring them costs seconds and changes nothing served)
        mlflow.keras.log_model(kmodel, name="model", signature=signature, registered_model_name="b6-stock",
                               pip_requirements=pip_requirements())
    mlflow.MlflowClient().set_registered_model_alias("b6-stock", "champion", "1")

    rng = np.random.default_rng(0)
    big = rng.integers(0, len(raw), big_rows)
    bodies = {"mlflow-dl": (split(raw.iloc[[0]]), split(raw.iloc[big])),
              "stock": (tensor(scaled.iloc[[0]]), tensor(scaled.iloc[big]))}
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    one = {arm: [] for arm in bodies}
    thousand = {arm: [] for arm in bodies}
    with scoring_server("models:/b6-mlflow-dl@champion", env) as ours, \
            scoring_server("models:/b6-stock@champion", env) as stock:
        urls = {"mlflow-dl": ours, "stock": stock}
        for arm, url in urls.items():  # warm up (first call traces the graph)
            for _ in range(warm):
                post(url, bodies[arm][0])
                post(url, bodies[arm][1])
        for _ in range(args.repeats):
            for arm, url in urls.items():
                one[arm].append(statistics.median(post(url, bodies[arm][0]) for _ in range(one_row)))
                thousand[arm].append(statistics.median(post(url, bodies[arm][1]) for _ in range(big_requests)))
    p50 = {arm: statistics.median(v) * 1000 for arm, v in one.items()}
    p50k = {arm: statistics.median(v) * 1000 for arm, v in thousand.items()}
    for arm in bodies:
        print(f"{arm}: one row p50 {p50[arm]:.2f} ms; {big_rows:,} rows p50 {p50k[arm]:.1f} ms "
              f"(median over {args.repeats} repeats of {one_row} / {big_requests} requests)")
    print(f"serving_latency ratio={p50['stock'] / p50['mlflow-dl']:.2f} (stock {p50['stock']:.2f} ms / "
          f"mlflow-dl {p50['mlflow-dl']:.2f} ms one-row p50; {big_rows:,} rows: stock {p50k['stock']:.1f} ms, "
          f"mlflow-dl {p50k['mlflow-dl']:.1f} ms{'; --quick: not a measurement' if args.quick else ''})")


if __name__ == "__main__":
    main()
