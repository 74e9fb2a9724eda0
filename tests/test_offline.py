"""The tracking server goes away: nothing lost, nothing twice, training never waits on it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time

import mlflow
import pytest

from conftest import free_port, mlflow_dl_cli
from servers import Server

FIT_SCRIPT = """
import os, sys, time
import numpy as np, keras
import mlflow_dl
rng = np.random.default_rng(0)
x = rng.normal(size=(40, 3)).astype("float32"); y = (x[:, 0] > 0).astype("float32")
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1, activation="sigmoid")])
model.compile("adam", "binary_crossentropy")
started = time.perf_counter()
model.fit(x, y, validation_split=0.25, epochs=int(sys.argv[1]), verbose=0, callbacks=[mlflow_dl.MlflowCallback()])
print("FIT_SECONDS", time.perf_counter() - started)
"""


OUTAGE_FIT_SCRIPT = """
import os, sys, time
import numpy as np, keras
import mlflow_dl

def wait_for(name):
    deadline = time.time() + 300
    while not os.path.exists(name):
        assert time.time() < deadline, name
        time.sleep(0.05)

class Outage(keras.callbacks.Callback):  # after MlflowCallback logged the epoch: let the test stop / start the server
    def on_epoch_end(self, epoch, logs=None):
        if epoch in (0, 2):
            open(f"epoch-{epoch}", "w").close()
            wait_for("down" if epoch == 0 else "up")

rng = np.random.default_rng(0)
x = rng.normal(size=(40, 3)).astype("float32"); y = (x[:, 0] > 0).astype("float32")
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1, activation="sigmoid")])
model.compile("adam", "binary_crossentropy")
model.fit(x, y, validation_split=0.25, epochs=5, verbose=0, callbacks=[mlflow_dl.MlflowCallback(), Outage()])
"""

# the server goes away after the last epoch's records, while the servable model uploads: the fit waits for the
# test there (a real server really stopped; the pause is the only thing added to mlflow-dl's own path)
MODEL_UPLOAD_OUTAGE_SCRIPT = """
import os, time
import numpy as np, keras
import mlflow_dl
from mlflow_dl.fit import model_logging

finish = model_logging.finish_pipeline_model

def finish_once_the_server_is_down(*args, **kwargs):
    open("paused", "w").close()
    deadline = time.time() + 300
    while not os.path.exists("down"):
        assert time.time() < deadline
        time.sleep(0.05)
    return finish(*args, **kwargs)

model_logging.finish_pipeline_model = finish_once_the_server_is_down
rng = np.random.default_rng(0)
x = rng.normal(size=(40, 3)).astype("float32"); y = (x[:, 0] > 0).astype("float32")
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1, activation="sigmoid")])
model.compile("adam", "binary_crossentropy")
model.fit(x, y, validation_split=0.25, epochs=3, verbose=0, callbacks=[mlflow_dl.MlflowCallback()])
print("FIT_RETURNED")
"""

# `mlflow-dl train`, whose server goes away once the fit has delivered everything, before the trial logs its test
# metrics and plot: the trial waits for the test there
TEST_METRICS_OUTAGE_SCRIPT = """
import os, sys, time
from mlflow_dl import cli
from mlflow_dl.training import trial

outputs = trial.test_outputs

def outputs_once_the_server_is_down(*args):
    open("paused", "w").close()
    deadline = time.time() + 300
    while not os.path.exists("down"):
        assert time.time() < deadline
        time.sleep(0.05)
    return outputs(*args)

trial.test_outputs = outputs_once_the_server_is_down
sys.argv = ["mlflow-dl", "train", "--epochs", "2", "--patience", "none", "--hidden", "8"]
cli.program()
"""


def _history(client, run_id, key):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_server_down_for_a_whole_run_then_sync(tmp_path):
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    before = int(time.time() * 1000)
    out = subprocess.run([sys.executable, "-c", FIT_SCRIPT, "5"], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    fit_seconds = float(out.stdout.split("FIT_SECONDS")[1])
    assert fit_seconds < 30  # bounded: the probe (2 s) and two end-of-fit waits (5 s each), no retries
    journals = list((tmp_path / ".mlflow-dl" / "journal").glob("*.jsonl"))
    assert len(journals) == 1
    saved = journals[0].read_text()

    server = Server(tmp_path, port=port).start()
    try:
        synced = subprocess.run(mlflow_dl_cli() + ["sync"], capture_output=True, text=True, cwd=tmp_path, env=env,
                                timeout=120)
        assert synced.returncode == 0 and "1 journals synced" in synced.stdout, synced.stderr[-2000:]
        assert not list((tmp_path / ".mlflow-dl" / "journal").glob("*.jsonl"))  # done: the journal is gone
        client = mlflow.MlflowClient(server.url)
        (run,) = client.search_runs([client.get_experiment_by_name("mlflow-dl").experiment_id])
        assert run.info.status == "FINISHED"
        assert before <= run.info.start_time < run.info.end_time < int(time.time() * 1000)
        assert run.info.start_time < os.path.getmtime(tmp_path / f"server-{port}.log") * 1000  # before the server
        for key in ("loss", "val_loss"):
            assert _history(client, run.info.run_id, key) == [0, 1, 2, 3, 4]
        assert run.data.params["epochs"] == "5" and "best_val_loss" in run.data.metrics
        assert "mlflow_dl.heartbeat" in run.data.tags
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.keras"]

        # replaying the same records again (a sync killed before its acks) duplicates nothing
        records = [line for line in saved.splitlines() if '"op":"artifact"' not in line]  # (their copies are gone)
        journals[0].write_text("\n".join(records + [json.dumps({"bind": run.info.run_id})]) + "\n")
        again = subprocess.run(mlflow_dl_cli() + ["sync"], capture_output=True, text=True, cwd=tmp_path, env=env,
                               timeout=120)
        assert again.returncode == 0, again.stderr[-2000:]
        assert len(client.search_runs([run.info.experiment_id])) == 1
        for key in ("loss", "val_loss"):
            assert _history(client, run.info.run_id, key) == [0, 1, 2, 3, 4]
    finally:
        server.stop()


@pytest.mark.slow
def test_server_killed_in_the_middle_of_a_sweep_loses_nothing(tmp_path):
    """The server stops once the first trial logs, and stays down until the sweep has failed over into its
    offline store (or ended): the sweep then always goes on offline and exits 4, and sync delivers the rest."""
    server = Server(tmp_path).start()
    client = mlflow.MlflowClient(server.url)
    # fewer, shorter retries than the CLI's own: the time to fail over is not what this test measures
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    journal = tmp_path / ".mlflow-dl" / "journal"
    outage = {}
    proc = subprocess.Popen(mlflow_dl_cli() + ["sweep", "dropout", "--rates", "0,0.1,0.2,0.3", "--epochs", "6",
                                               "--patience", "none", "--hidden", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)

    def kill_after_first_child():
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            try:
                runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                          "tags.mlflow.parentRunId != ''")
                if any(r.data.metrics.get("loss") is not None for r in runs):
                    break
            except Exception:
                pass
            time.sleep(0.3)
        outage["down"] = time.time()
        server.stop()
        while time.time() < deadline and proc.poll() is None and not list(journal.glob("offline-*")):
            time.sleep(0.2)
        outage["failed_over"] = bool(list(journal.glob("offline-*")))
        server.start()
        outage["up"] = time.time()

    killer = threading.Thread(target=kill_after_first_child, daemon=True)
    killer.start()
    try:
        _, err = proc.communicate(timeout=600)
        ended = time.time()
        killer.join(120)
        assert outage["down"] < ended and outage["failed_over"], (outage, err[-3000:])  # down while it ran
        assert proc.returncode == 4, err[-3000:]
        assert "mlflow-dl sync" in err.strip().splitlines()[-1]
        synced = subprocess.run(mlflow_dl_cli() + ["sync"], capture_output=True, text=True, cwd=tmp_path,
                                env=env, timeout=300)
        assert synced.returncode == 0, synced.stderr[-2000:]
        runs = client.search_runs([client.get_experiment_by_name("mlflow-dl").experiment_id])
        assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}, (
            [(r.info.run_name, r.info.status, r.data.tags.get("mlflow_dl.error")) for r in runs], err[-3000:])
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
        assert len(children) == 4
        for child in children:
            for key in ("loss", "val_loss"):
                assert _history(client, child.info.run_id, key) == list(range(6)), (child.info.run_name, key)
    finally:
        if proc.poll() is None:
            proc.kill()
        killer.join(30)
        server.stop()


@pytest.mark.slow
def test_server_back_before_the_fit_ends_gets_every_epoch_from_the_fit_itself(tmp_path):
    """The server stops after epoch 0 and is back after epoch 2 (the fit waits at those two points for the
    test, not on a clock): epochs 1 and 2 are logged while it is down, and the fit delivers them itself
    once it is back, in order, once each; nothing is left for sync."""
    server = Server(tmp_path).start()
    # MLflow's own retries off: the journal's thread does the retrying, which is what this test is about
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    proc = subprocess.Popen([sys.executable, "-c", OUTAGE_FIT_SCRIPT], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for marker, step in (("epoch-0", server.stop), ("epoch-2", server.start)):
            deadline = time.time() + 300
            while not (tmp_path / marker).exists():
                assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
                time.sleep(0.1)
            step()
            (tmp_path / ("down" if marker == "epoch-0" else "up")).touch()
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        assert not list((tmp_path / ".mlflow-dl" / "journal").glob("*.jsonl")), err[-3000:]  # nothing for sync
        client = mlflow.MlflowClient(server.url)
        (run,) = client.search_runs([client.get_experiment_by_name("mlflow-dl").experiment_id])
        assert run.info.status == "FINISHED"
        for key in ("loss", "val_loss"):
            assert _history(client, run.info.run_id, key) == [0, 1, 2, 3, 4]
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()


@contextlib.contextmanager
def _server_stops_while_paused(script, tmp_path):
    """A real server, and `script` against it in its own process, which waits where it writes "paused" while
    the server stops. Yields the ended process's (returncode, stdout, stderr) and `sync`, which starts the
    server again, runs `mlflow-dl sync` and returns the server's client."""
    server = Server(tmp_path).start()
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sync():
        server.start()
        synced = subprocess.run(mlflow_dl_cli() + ["sync"], capture_output=True, text=True, cwd=tmp_path, env=env,
                                timeout=300)
        assert synced.returncode == 0, synced.stderr[-2000:]
        return mlflow.MlflowClient(server.url)

    try:
        deadline = time.time() + 300
        while not (tmp_path / "paused").exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        server.stop()
        (tmp_path / "down").touch()
        out, err = proc.communicate(timeout=300)
        yield proc.returncode, out, err, sync
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()


@pytest.mark.slow
def test_server_gone_while_the_model_uploads_the_run_ends_through_the_journal(tmp_path):
    """The server took every epoch, then went away while the end of fit uploaded the model: fit returns, the
    run's end, curves and checkpoint wait in the journal, and sync delivers a FINISHED run (the model is
    skipped and says so; its weights are the checkpoint's)."""
    with _server_stops_while_paused(MODEL_UPLOAD_OUTAGE_SCRIPT, tmp_path) as (code, out, err, sync):
        assert code == 0 and "FIT_RETURNED" in out, err[-3000:]
        assert list((tmp_path / ".mlflow-dl" / "journal").glob("*.jsonl")), err[-3000:]  # the rest, for sync
        client = sync()
        (run,) = client.search_runs([client.get_experiment_by_name("mlflow-dl").experiment_id])
        assert run.info.status == "FINISHED", run.data.tags
        assert _history(client, run.info.run_id, "val_loss") == [0, 1, 2] and "best_val_loss" in run.data.metrics
        assert "tracking server unreachable" in run.data.tags["mlflow_dl.model_skipped"]
        files = {a.path for folder in ("checkpoints", "plots") for a in client.list_artifacts(run.info.run_id, folder)}
        assert {"checkpoints/best.keras", "plots/learning_curves.png"} <= files


@pytest.mark.slow
def test_server_gone_after_the_fit_delivered_everything_the_test_metrics_wait_for_sync(tmp_path):
    """The fit's records all reached the server and its journal is gone; then the server goes away before the
    trial logs its test metrics and plot: those go into the run's journal again, `train` says to sync
    (exit 4), and sync delivers them and the run's end."""
    with _server_stops_while_paused(TEST_METRICS_OUTAGE_SCRIPT, tmp_path) as (code, _, err, sync):
        assert code == 4 and "mlflow-dl sync" in err.strip().splitlines()[-1], err[-3000:]
        client = sync()
        (run,) = client.search_runs([client.get_experiment_by_name("mlflow-dl").experiment_id])
        assert run.info.status == "FINISHED", run.data.tags
        assert "test_loss" in run.data.metrics and _history(client, run.info.run_id, "val_loss") == [0, 1]
        assert "plots/confusion_matrix.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        (output,) = run.outputs.model_outputs  # delivered by the fit itself, before the outage
        assert client.get_logged_model(output.model_id).status == "READY"
