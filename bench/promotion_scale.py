"""B5: pick the champion among 1,000 and 10,000 runs on a PostgreSQL-backed server (../shared/BENCHMARKS.md).

A fresh PostgreSQL database (127.0.0.1:5432, user postgres, trust auth) gets its
MLflow schema from MlflowClient, one experiment, and finished runs with
`model_val_loss`, `model.total_params`, `data.dataset` and one comparability key tag
bulk-inserted into MLflow's own tables (creating 10,000 runs one REST call at a time would
take far longer than the thing measured). Then a real `mlflow server` on loopback serves
that database and we time what promote does to decide and publish: `registry.ranked` (the
server-side search_runs of the candidates of one key, plus the query that finds no other
key) plus `set_registered_model_alias`, at 1,000 runs and again at 10,000. Not timed: the
winner's servable-model check (one MLmodel download, whatever the number of runs; these
bulk-inserted runs have no artifacts).
Last line: the ratio 10,000 / 1,000 with both seconds.

    python bench/promotion_scale.py [--repeats 5]
    python bench/promotion_scale.py --quick    # 100 and 1,000 runs, 1 repeat, one server: does it run?
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PG = "postgresql://postgres@127.0.0.1:5432"


def create_database() -> str:
    import psycopg2

    name = f"b5_{int(time.time())}_{os.getpid()}"
    conn = psycopg2.connect(f"{PG}/postgres")
    conn.autocommit = True
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return name


def drop_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(f"{PG}/postgres")
    conn.autocommit = True
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def insert_runs(db: str, experiment_id: str, start: int, count: int, rng) -> None:
    """`count` FINISHED runs like mlflow-dl's (params, model_val_loss, key tags) straight into the tables."""
    import psycopg2
    from psycopg2.extras import execute_values

    now = int(time.time() * 1000)
    runs, metrics, params, tags = [], [], [], []
    for i in range(start, start + count):
        rid = uuid.uuid4().hex
        value = float(0.2 + rng.random())
        runs.append((rid, f"run-{i}", "LOCAL", "", "", "bench", "FINISHED", now + i, now + i + 1, "",
                     "active", f"mlflow-artifacts:/{experiment_id}/{rid}/artifacts", int(experiment_id)))
        metrics += [("model_val_loss", value, now, 0, False, rid), ("best_val_loss", value, now, 0, False, rid)]
        tags += [("mlflow_dl.comparability_key", "b5b5b5b5b5b5", rid), ("mlflow_dl.comparability.dataset", "breast_cancer", rid)]
        params += [("model.total_params", str(int(rng.integers(100, 10000))), rid),
                   ("data.dataset", "breast_cancer", rid)]
    conn = psycopg2.connect(f"{PG}/{db}")
    with conn, conn.cursor() as cur:
        execute_values(cur, "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
                            "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, "
                            "experiment_id) VALUES %s", runs, page_size=2000)
        execute_values(cur, "INSERT INTO metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES %s",
                       metrics, page_size=2000)
        execute_values(cur, "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES %s",
                       metrics, page_size=2000)
        execute_values(cur, "INSERT INTO params (key, value, run_uuid) VALUES %s", params, page_size=4000)
        execute_values(cur, "INSERT INTO tags (key, value, run_uuid) VALUES %s", tags, page_size=4000)
    conn.close()


def time_pick_and_move(url: str, name: str, versions: list[str], repeats: int) -> tuple[float, str]:
    import mlflow

    from mlflow_dl.registry.candidates import ranked
    from mlflow_dl.registry.promotion import move_alias

    client = mlflow.MlflowClient(url)
    times, winner = [], None
    for i in range(repeats):
        started = time.perf_counter()
        winner = ranked("b5", client=client)[0]
        move_alias(name, "champion", versions[i % 2], client=client)
        times.append(time.perf_counter() - started)
    return statistics.median(times), winner.run_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="100 and 1,000 runs, 1 repeat, one server: a check that it runs")
    args = parser.parse_args()
    small, large = (100, 1000) if args.quick else (1000, 10000)
    if args.quick:
        args.repeats = 1
    import mlflow
    import numpy as np

    from _server import mlflow_server

    rng = np.random.default_rng(0)
    db = create_database()
    try:
        store = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}"
        setup = mlflow.MlflowClient(store)  # creates MLflow's schema in the fresh database
        experiment_id = setup.create_experiment("b5")
        setup.create_registered_model("b5-model")
        versions = [str(setup.create_model_version("b5-model", f"/tmp/b5/{i}").version) for i in range(2)]
        results = {}
        with contextlib.ExitStack() as stack:
            # a fresh server per size; --quick: one server for both (a check that it runs, in seconds)
            shared = stack.enter_context(mlflow_server(store)) if args.quick else None
            for total in (small, large):
                already = small if results else 0
                insert_runs(db, experiment_id, already, total - already, rng)
                with contextlib.nullcontext(shared) if shared else mlflow_server(store) as url:
                    mlflow.MlflowClient(url).search_runs([experiment_id], max_results=1)  # warm the server
                    seconds, winner = time_pick_and_move(url, "b5-model", versions, args.repeats)
                (truth,) = mlflow.MlflowClient(store).search_runs(
                    [experiment_id], max_results=1, order_by=["metrics.model_val_loss ASC"])
                assert winner == truth.info.run_id, (winner, truth.info.run_id)
                results[total] = seconds
                print(f"{total} runs: pick + alias move {seconds:.3f}s (median of {args.repeats})", flush=True)
    finally:
        drop_database(db)
    ratio = results[large] / results[small]
    print(f"promotion_scale ratio={ratio:.2f} ({large:,} runs {results[large]:.3f}s / {small:,} runs "
          f"{results[small]:.3f}s, median of {args.repeats})")


if __name__ == "__main__":
    main()
