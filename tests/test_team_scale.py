"""Eight concurrent trial processes logging to a PostgreSQL-backed tracking server lose nothing."""

from __future__ import annotations

import os
import subprocess

import mlflow
import pytest

from conftest import mlflow_dl_cli
from servers import Server, postgres_uri  # noqa: F401  (fixture)

RATES = "0,0.05,0.1,0.15,0.2,0.25,0.3,0.35"
EPOCHS = 3


@pytest.mark.slow
def test_eight_workers_on_postgres_lose_no_point(tmp_path, postgres_uri):
    server = Server(tmp_path, "--backend-store-uri", postgres_uri, "--workers", "2").start()
    try:
        out = subprocess.run(mlflow_dl_cli() + ["sweep", "dropout", "--rates", RATES, "--workers", "8", "--epochs",
                                                str(EPOCHS), "--patience", "none", "--hidden", "8"],
                             cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": server.url},
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "SQLite" not in out.stderr  # PostgreSQL: no lock warning
        client = mlflow.MlflowClient(server.url)
        runs = client.search_runs([client.get_experiment_by_name("mlflow-dl").experiment_id])
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
        assert len(children) == 8 and {r.info.status for r in runs} == {"FINISHED"}
        per_epoch = [k for k in children[0].data.metrics if k in ("loss", "val_loss", "accuracy", "val_accuracy")]
        assert len(per_epoch) == 4
        import psycopg2

        with psycopg2.connect(postgres_uri) as conn:  # count every stored point, straight from PostgreSQL
            cur = conn.cursor()
            cur.execute("SELECT run_uuid, key, array_agg(step ORDER BY step) FROM metrics "
                        "WHERE key = ANY(%s) GROUP BY run_uuid, key", (per_epoch,))
            points = {(run, key): steps for run, key, steps in cur.fetchall()}
        assert len(points) == 8 * 4
        assert all(steps == list(range(EPOCHS)) for steps in points.values())
    finally:
        server.stop()


def test_sqlite_store_with_workers_warns_once(tmp_path):
    out = subprocess.run(mlflow_dl_cli() + ["sweep", "dropout", "--rates", "0,0.2", "--workers", "2", "--epochs", "1",
                                            "--hidden", "4"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count("warning:") == 1 and "PostgreSQL" in out.stderr


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_runs_logging_one_new_dataset_at_once_all_get_it(store, tracking_store, request):
    """MLflow's store looks a dataset up, then inserts it: parallel children used to collide on it."""
    import threading

    import numpy as np
    import pandas as pd

    from mlflow_dl.delivery import experiments, runs

    if store == "postgres":
        uri = request.getfixturevalue("postgres_uri")  # SQLAlchemy 2.1's default driver is psycopg 3: name psycopg2
        mlflow.set_tracking_uri(uri.replace("postgresql://", "postgresql+psycopg2://", 1))
    experiment_id = experiments.ensure("dataset-race")
    errors, run_ids = [], []

    def child(dataset, barrier):
        with mlflow.start_run(experiment_id=experiment_id) as run:
            run_ids.append(run.info.run_id)
            barrier.wait()
            try:
                runs.log_dataset(dataset)
            except Exception as exc:  # noqa: BLE001  (collected, asserted below)
                errors.append(exc)

    for round_ in range(5):
        frame = pd.DataFrame({"x": np.random.default_rng().random(20)})
        dataset = mlflow.data.from_pandas(frame, name=f"round{round_}")
        barrier = threading.Barrier(8)
        threads = [threading.Thread(target=child, args=(dataset, barrier)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    client = mlflow.MlflowClient()
    linked = [[d.dataset.name for d in client.get_run(r).inputs.dataset_inputs] for r in run_ids]
    assert len(linked) == 40 and all(len(names) == 1 for names in linked)
