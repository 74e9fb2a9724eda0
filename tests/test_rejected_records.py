"""The background logger tells a record the tracking server refuses (4xx) from a server that is away:
the refused record is dropped with one warning line and a tag, everything after it still arrives."""

from __future__ import annotations

import os

import keras
import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException, RestException

import mlflow_dl
from mlflow_dl.delivery import rejection, spool
from mlflow_dl.delivery.logger import BackgroundLogger


@pytest.fixture
def server(mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    return mlflow_server


def refusals(err: str) -> list[str]:
    return [line for line in err.splitlines() if "tracking server refused" in line]


def test_a_param_changed_mid_stream_is_dropped_and_everything_else_arrives(server, tmp_path, capfd):
    client = mlflow.MlflowClient()
    run_id = client.create_run(client.create_experiment(f"refused-{os.getpid()}-{tmp_path.name}")).info.run_id
    journal = spool.Journal(server, run_id, str(tmp_path / "journal"))
    logger = BackgroundLogger(client, run_id, journal)
    logger.log_params({"units": "8", "dropout": "0.4"})
    for step in range(5):
        logger.log_metrics({"loss": 1.0 / (step + 1), "val_loss": 2.0 / (step + 1)}, step=step)
    logger.log_params({"units": "16", "batch_size": "32"})  # units again, with another value
    for step in range(5, 10):
        logger.log_metrics({"loss": 1.0 / (step + 1), "val_loss": 2.0 / (step + 1)}, step=step)
    logger.set_tags({"stage": "done"})
    assert logger.flush(timeout=30)  # not stuck on the refused record
    assert logger.last_error is None
    assert journal.close()  # every record acknowledged, the refused one too: nothing left for `mlflow-dl sync`
    run = client.get_run(run_id)
    assert run.data.params == {"units": "8", "dropout": "0.4", "batch_size": "32"}
    assert run.data.tags["stage"] == "done"
    for key in ("loss", "val_loss"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(10))
    tag = run.data.tags[rejection.REJECTED_TAG]
    assert tag.startswith("param units: INVALID_PARAMETER_VALUE: ") and "\n" not in tag
    (line,) = refusals(capfd.readouterr().err)
    assert line.startswith(f"mlflow-dl: the tracking server refused param units of run {run_id}; dropped: "
                           "INVALID_PARAMETER_VALUE: ")
    client.set_terminated(run_id)


def test_autolog_into_a_run_whose_param_differs_completes_the_fit(server, capfd):
    """The user's run already holds keras_version from elsewhere: the fit's own value is refused."""
    mlflow_dl.autolog()
    try:
        keras.utils.set_random_seed(0)
        x = np.random.default_rng(0).normal(size=(48, 4)).astype("float32")
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        mlflow.set_experiment(f"refused-fit-{os.getpid()}")
        with mlflow.start_run() as run:
            mlflow.log_param("keras_version", "2.15-from-an-older-notebook")
            model.fit(x, x.sum(axis=1), validation_split=0.25, epochs=4, verbose=0)
    finally:
        mlflow_dl.autolog(disable=True)
    client = mlflow.MlflowClient()
    got = client.get_run(run.info.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params["keras_version"] == "2.15-from-an-older-notebook"
    assert got.data.params["tensorflow_grappler"] in ("on", "off")  # the record's other params arrived
    assert got.data.tags[rejection.REJECTED_TAG].startswith("param keras_version: INVALID_PARAMETER_VALUE")
    assert "mlflow_dl.model_skipped" not in got.data.tags  # not taken for a server that went away
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_loss")) == [0, 1, 2, 3]
    assert "best_val_loss" in got.data.metrics
    assert len(refusals(capfd.readouterr().err)) == 1


def test_sync_acknowledges_a_refused_record_instead_of_resending_it_forever(tmp_path, capfd):
    client = mlflow.MlflowClient()
    run_id = client.create_run(client.create_experiment("sync-refused")).info.run_id
    client.log_param(run_id, "units", "8")
    journal = spool.Journal(mlflow.get_tracking_uri(), run_id, str(tmp_path / "journal"))
    journal.append("params", params={"units": "16"})
    journal.append("metrics", flush=True, metrics=[["loss", 0.5, 1, 0]], tags={})
    journal.flush()
    assert spool.replay_all(str(tmp_path / "journal")) == [(f"{run_id}.jsonl", 1)]
    assert os.listdir(tmp_path / "journal") == []  # nothing left to resend
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [0.5]
    assert client.get_run(run_id).data.params == {"units": "8"}
    assert len(refusals(capfd.readouterr().err)) == 1
    client.set_terminated(run_id)


@pytest.mark.parametrize("exc, refused", [
    (RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "Changing param values is not allowed.\n"
                    "Param with key='units' was already logged"}), True),
    (RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run 'abc' not found"}), True),
    (MlflowException("API request to http://127.0.0.1:9/api failed with exception ConnectionError"), False),
    (RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "try later"}), False),
    (RestException({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}), False),
    (RestException({"error_code": "UNAUTHENTICATED", "message": "token expired"}), False),
    (ConnectionRefusedError(111, "Connection refused"), False),
], ids=["changed-param", "deleted-run", "connection-refused", "503", "429", "401", "socket"])
def test_what_counts_as_refused(exc, refused):
    reason = rejection.reason(exc)
    assert (reason is not None) == refused
    if refused:
        assert "\n" not in reason and reason.startswith(exc.error_code)
