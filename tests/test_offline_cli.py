"""CLI commands with the tracking server down: they train into the journal (exit 3) and `sync` rebuilds
the runs once the server is back, or, when they need the server, stop in seconds with one line (exit 2)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import mlflow
import pandas as pd
import pytest
import yaml

from conftest import REPO, artifact_paths, free_port, mlflow_dl_cli
from servers import Server

TINY = ["--epochs", "3", "--patience", "none", "--hidden", "8"]


def _cli(args, env, cwd, timeout=600):
    started = time.perf_counter()
    out = subprocess.run(mlflow_dl_cli() + args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    return out, time.perf_counter() - started


def _stores(folder):
    return sorted((folder / ".mlflow-dl" / "journal").glob("offline-*"))


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def _steps(client, run_id, key="loss"):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _assert_journaled(out, port, folder):
    """Exit 3, and the last line names the server, the store and `mlflow-dl sync`."""
    assert out.returncode == 3, out.stderr[-3000:]
    (store,) = _stores(folder)
    last = _last_line(out.stderr)
    assert f"http://127.0.0.1:{port}" in last and str(store) in last and "mlflow-dl sync" in last, last
    return store


@pytest.mark.slow
def test_train_with_the_server_down_then_sync(tmp_path):
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    started = time.time()
    out, _ = _cli(["train", *TINY], env, tmp_path)
    store = _assert_journaled(out, port, tmp_path)
    meta = json.loads((store / "store.json").read_text())
    assert meta["created"] / 1000 - started < 30  # one bounded probe, not MLflow's minutes of retries
    local = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (offline,) = local.search_runs([e.experiment_id for e in local.search_experiments()])

    server = Server(tmp_path, port=port).start()
    try:
        synced, _ = _cli(["sync"], env, tmp_path)
        assert synced.returncode == 0, synced.stderr[-3000:]
        assert "1 runs sent" in synced.stdout and not _stores(tmp_path)
        client = mlflow.MlflowClient(server.url)
        experiment = client.get_experiment_by_name("mlflow-dl")
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        (run,) = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED"
        assert (run.info.start_time, run.info.end_time) == (offline.info.start_time, offline.info.end_time)
        assert run.info.start_time < os.path.getmtime(tmp_path / f"server-{port}.log") * 1000
        for key in ("loss", "val_loss"):
            assert _steps(client, run.info.run_id, key) == [0, 1, 2]
        assert run.data.params == offline.data.params and "test_loss" in run.data.metrics
        assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["breast_cancer"]
        assert {"checkpoints/best.keras", "plots/learning_curves.png"} <= set(artifact_paths(client, run.info.run_id))
        (output,) = run.outputs.model_outputs
        model = client.get_logged_model(output.model_id)
        assert model.source_run_id == run.info.run_id and model.status == "READY"

        again, _ = _cli(["sync"], env, tmp_path)  # nothing left: nothing sent twice
        assert again.returncode == 0 and len(client.search_runs([experiment.experiment_id])) == 1
        assert _steps(client, run.info.run_id) == [0, 1, 2]
    finally:
        server.stop()


@pytest.mark.slow
def test_sweep_with_the_server_down_then_a_killed_sync_and_two_more(tmp_path):
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    out, _ = _cli(["sweep", "dropout", "--rates", "0,0.2,0.4", "--epochs", "2", "--patience", "none",
                   "--hidden", "8"], env, tmp_path)
    store = _assert_journaled(out, port, tmp_path)

    server = Server(tmp_path, port=port).start()
    try:
        # sync SIGKILLed as soon as its first run is complete, then run again, twice
        ledger = store / "synced.jsonl"
        proc = subprocess.Popen(mlflow_dl_cli() + ["sync"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while '"done"' not in (ledger.read_text() if ledger.exists() else "") and proc.poll() is None:
            assert time.time() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert ledger.read_text().count('"done"') < 4, "sync finished before it was killed: the test proves nothing"
        for _ in range(2):
            synced, _ = _cli(["sync"], env, tmp_path)
            assert synced.returncode == 0, synced.stderr[-3000:]
        assert not _stores(tmp_path)

        client = mlflow.MlflowClient(server.url)
        runs = client.search_runs([client.get_experiment_by_name("mlflow-dl").experiment_id])
        assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
        (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(c.info.run_name for c in children) == ["dropout=0", "dropout=0.2", "dropout=0.4"]
        child_ids = {c.info.run_id for c in children}
        assert parent.data.tags["best_run_id"] in child_ids
        for child in children:
            assert _steps(client, child.info.run_id) == [0, 1]
            assert len(child.outputs.model_outputs) == 1
        table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="results.csv",
                                                                tracking_uri=server.url))
        assert set(table["run_id"]) == child_ids
        assert any(p.startswith("plots/") and p.endswith(".png") for p in artifact_paths(client, parent.info.run_id))
        experiment_ids = [parent.info.experiment_id]
        assert len(client.search_logged_models(experiment_ids)) == 3
    finally:
        server.stop()


@pytest.mark.parametrize("args", [
    ["promote", "--experiment", "mlflow-dl", "--model-name", "m"],
    ["serve", "--model-name", "m"],
    ["diagnose", "0" * 32],
    ["resume", "0" * 32],
    ["reap"],
], ids=lambda a: a[0])
def test_commands_that_need_the_server_stop_in_seconds(args, tmp_path):
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://user:secret@127.0.0.1:{port}"}
    out, elapsed = _cli(args, env, tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"http://user@127.0.0.1:{port}" in lines[0] and "secret" not in lines[0]
    assert "does not answer" in lines[0] and f"mlflow-dl {args[0]}" in lines[0]
    assert elapsed < 10  # the bound: a generous one for the interpreter's start and one refused connect


def _project_waiting_for(marker, folder):
    """The repo's MLproject, its `train` command made to wait for `marker` first: the test stops the
    server between `mlflow run` creating its run and the command starting, without a race."""
    spec = yaml.safe_load(open(os.path.join(REPO, "MLproject")))
    entry = spec["entry_points"]["train"]
    wait = f"{sys.executable} -c \"import os,time\nwhile not os.path.exists('{marker}'): time.sleep(0.1)\""
    entry["command"] = f"{wait} && {entry['command']}"
    project = folder / "project"
    project.mkdir()
    (project / "MLproject").write_text(yaml.safe_dump({"name": "wait", "entry_points": {"train": entry}}))
    return project


@pytest.mark.slow
def test_mlflow_run_whose_server_goes_away_after_it_created_the_run(tmp_path):
    port = free_port()
    server = Server(tmp_path, port=port).start()
    client = mlflow.MlflowClient(server.url)
    marker = tmp_path / "go"
    project = _project_waiting_for(marker, tmp_path)
    # MLflow's own calls after the command (marking the run FAILED) give up at once instead of retrying
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "run", str(project), "-e", "train", "--env-manager",
                             "local", "--experiment-name", "projects", "-P", "epochs=2", "-P", "hidden=8", "-P",
                             "patience=none"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (experiment := client.get_experiment_by_name("projects")) or \
                not client.search_runs([experiment.experiment_id]):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
        (created,) = client.search_runs([experiment.experiment_id])
        server.stop()
        marker.touch()
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode != 0  # mlflow run reports the command's exit code 3 as a failure
        # the entry point's line (mlflow run's own report of the failure follows it)
        (line,) = [line for line in stderr.splitlines() if "mlflow-dl sync" in line]
        (store,) = _stores(project)  # mlflow run starts the command in the project's folder
        assert f"http://127.0.0.1:{port}" in line and str(store) in line, stderr[-3000:]

        server.start()
        synced, _ = _cli(["sync"], {**os.environ, "MLFLOW_TRACKING_URI": server.url}, project)
        assert synced.returncode == 0 and "1 runs sent" in synced.stdout, synced.stderr[-3000:]
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert [r.info.run_id for r in runs] == [created.info.run_id]  # filled in, not a second run
        (run,) = runs
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.project.entryPoint"] == "train"
        assert _steps(client, run.info.run_id) == [0, 1] and run.data.params["model.hidden"] == "8"
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()


def _once_a_run_has_an_epoch(client, proc, where=""):
    """The runs matching `where`, as soon as one has logged an epoch (while `proc` still runs)."""
    deadline = time.time() + 300
    while True:
        assert time.time() < deadline and proc.poll() is None
        try:
            found = client.search_runs([e.experiment_id for e in client.search_experiments()], where)
            if found and "loss" in found[0].data.metrics:
                return found
        except Exception:  # noqa: BLE001  (the experiment is being created)
            pass
        time.sleep(0.2)


@pytest.mark.slow
def test_server_lost_during_train_and_never_back_within_the_command(tmp_path):
    server = Server(tmp_path).start()
    client = mlflow.MlflowClient(server.url)
    # MLflow's retries cut short, so that the command meets the dead server in seconds, not minutes
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    proc = subprocess.Popen(mlflow_dl_cli() + ["train", "--epochs", "100", "--patience", "none", "--hidden", "8"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        (online,) = _once_a_run_has_an_epoch(client, proc)
        server.stop()
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 4, stderr[-3000:]
        last = _last_line(stderr)
        assert server.url in last and "mlflow-dl sync" in last and str(tmp_path / ".mlflow-dl" / "journal") in last
        assert "which finished" in last  # the training, and the test-set evaluation after it

        server.start()
        synced, _ = _cli(["sync"], {**os.environ, "MLFLOW_TRACKING_URI": server.url}, tmp_path)
        assert synced.returncode == 0, synced.stderr[-3000:]
        run = client.get_run(online.info.run_id)
        assert run.info.status == "FINISHED"
        assert _steps(client, run.info.run_id) == list(range(100))  # the fit went on to its end
        assert "test_loss" in run.data.metrics and "best_val_loss" in run.data.metrics
        assert {"checkpoints/best.keras", "plots/learning_curves.png", "plots/confusion_matrix.png"} <= set(
            artifact_paths(client, run.info.run_id))
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()


def test_another_commands_unsent_journal_in_the_same_folder_is_not_this_commands_outage(tmp_path):
    """Two commands in one project folder: the journal of one still sending (or left by a lost server) must
    not make the other, whose server answered throughout, report a lost server (exit 4)."""
    journal = tmp_path / ".mlflow-dl" / "journal"
    journal.mkdir(parents=True)
    theirs = journal / "0123456789abcdef0123456789abcdef.jsonl"
    theirs.write_text(json.dumps({"op": "open", "tracking_uri": "http://127.0.0.1:1", "command": "1"}) + "\n"
                      + json.dumps({"seq": 1, "op": "metric", "key": "loss", "value": 1.0, "step": 0}) + "\n")
    later = time.time() + 3600  # as if still appended to while this command runs
    os.utime(theirs, (later, later))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    out, _ = _cli(["train", "--epochs", "1", "--patience", "none", "--hidden", "4"], env, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "stopped answering" not in out.stderr
    assert theirs.exists()  # left for its own command, or `sync`


def test_sync_with_the_server_still_down_stops_in_seconds_and_keeps_the_store(tmp_path):
    port = free_port()
    store = tmp_path / ".mlflow-dl" / "journal" / "offline-20260101-000000-00000000"
    store.mkdir(parents=True)
    (store / "store.json").write_text(json.dumps({"tracking_uri": f"http://127.0.0.1:{port}", "complete": True}))
    out, elapsed = _cli(["sync"], {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}, tmp_path,
                        timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    (line,) = out.stderr.strip().splitlines()
    assert f"http://127.0.0.1:{port}" in line and str(store) in line and "mlflow-dl sync" in line
    assert elapsed < 10 and (store / "store.json").exists()


@contextlib.contextmanager
def _server_lost_after_a_childs_first_epoch(args, tmp_path):
    """`mlflow-dl <args>` against a real server that stops once a child run has an epoch and stays
    down until the command ends: exit 4, "which finished"; then the server is back and `sync` ran.
    Yields the client and that first child (created online)."""
    server = Server(tmp_path).start()
    client = mlflow.MlflowClient(server.url)
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    proc = subprocess.Popen(mlflow_dl_cli() + args, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        (first,) = _once_a_run_has_an_epoch(client, proc, "tags.mlflow.parentRunId != ''")
        server.stop()
        _, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 4, stderr[-3000:]
        last = _last_line(stderr)
        assert server.url in last and "which finished" in last and "mlflow-dl sync" in last, last
        server.start()
        synced, _ = _cli(["sync"], {**os.environ, "MLFLOW_TRACKING_URI": server.url}, tmp_path)
        assert synced.returncode == 0, synced.stderr[-3000:]
        yield client, first
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()


@pytest.mark.slow
def test_server_lost_during_a_sweep_the_rest_trains_offline_then_sync(tmp_path):
    args = ["sweep", "dropout", "--rates", "0,0.2,0.4", "--epochs", "40", "--patience", "none", "--hidden", "8"]
    with _server_lost_after_a_childs_first_epoch(args, tmp_path) as (client, first):
        parent_id = first.data.tags["mlflow.parentRunId"]
        runs = client.search_runs([first.info.experiment_id])
        assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}, [
            (r.info.run_name, r.info.status) for r in runs]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
        assert len(children) == 3 and first.info.run_id in {c.info.run_id for c in children}  # kept its id
        for child in children:
            assert _steps(client, child.info.run_id) == list(range(40)), child.info.run_name
        parent = client.get_run(parent_id)
        assert parent.data.tags["best_run_id"] in {c.info.run_id for c in children}
        table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent_id, artifact_path="results.csv",
                                                                tracking_uri=client.tracking_uri))
        assert set(table["run_id"]) == {c.info.run_id for c in children}


FAILING_OVER_WORKER = """
import os, sys, time
import mlflow
from mlflow_dl.delivery import failover, runs
ready = sys.argv[1]  # all workers find the server gone at once: each waits, after its imports, for the others
open(os.path.join(ready, sys.argv[2]), "w").close()
deadline = time.time() + 300
while len(os.listdir(ready)) < 4 and time.time() < deadline:
    time.sleep(0.005)
assert failover.fail_over()
with runs.tracked_run("dropout", run_name=sys.argv[2]):
    mlflow.log_metric("loss", 1.0)
"""


def test_worker_processes_failing_over_at_once_share_one_store(tmp_path):
    from mlflow_dl.delivery.failover import FAILOVER_ENV

    folder = tmp_path / ".mlflow-dl" / "journal" / "offline-workers"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", FAILOVER_ENV: str(folder)}
    ready = tmp_path / "ready"
    ready.mkdir()
    workers = [subprocess.Popen([sys.executable, "-c", FAILING_OVER_WORKER, str(ready), f"trial-{i}"], env=env,
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(4)]
    errors = [w.communicate(timeout=180)[1] for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, "\n".join(e[-1500:] for e in errors)
    assert not any("Creating initial MLflow database tables" in e for e in errors)
    local = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    logged = local.search_runs([e.experiment_id for e in local.search_experiments()])
    assert sorted(r.info.run_name for r in logged) == [f"trial-{i}" for i in range(4)]
    assert {r.info.status for r in logged} == {"FINISHED"} and all(r.data.metrics["loss"] == 1.0 for r in logged)


@pytest.mark.slow
def test_server_lost_during_tune_the_rest_trains_offline_then_sync(tmp_path):
    with _server_lost_after_a_childs_first_epoch(["tune", "--max-trials", "3", "--epochs", "30"], tmp_path) as (
            client, first):
        parent_id = first.data.tags["mlflow.parentRunId"]
        runs = client.search_runs([first.info.experiment_id])
        assert {r.info.status for r in runs} == {"FINISHED"}, [
            (r.info.run_name, r.info.status, r.data.tags.get("mlflow_dl.error")) for r in runs]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
        assert len(runs) == 4 and len(children) == 3 and first.info.run_id in {c.info.run_id for c in children}
        for child in children:  # every epoch each trial trained, once
            steps = _steps(client, child.info.run_id, "val_loss")
            assert steps and steps == list(range(len(steps))), (child.info.run_name, steps)
        parent = client.get_run(parent_id)
        assert parent.data.tags["best_run_id"] in {c.info.run_id for c in children}
        assert parent.data.metrics["n_finished"] == 3 and "test_loss" in parent.data.metrics
        table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent_id, artifact_path="results.csv",
                                                                tracking_uri=client.tracking_uri))
        assert set(table["run_id"]) == {c.info.run_id for c in children}  # the online trial's row too


@pytest.mark.slow
def test_main_with_the_server_down_trains_everything_then_sync_and_promote(tmp_path):
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    out, _ = _cli(["main", "--epochs", "1"], env, tmp_path, timeout=1500)
    store = _assert_journaled(out, port, tmp_path)
    steps = [line for line in out.stdout.splitlines() if re.match(r"(train|sweep|multi_input|pca|tune|rnn_vs_lstm) ", line)]
    assert len(steps) == 13, out.stdout  # 3 trainings, 6 sweeps, multi_input, pca, tune, rnn_vs_lstm
    # the registry is the server's: promotion waits for sync, and says how
    assert ("promote: not now, the tracking server is down; once `mlflow-dl sync` has run: mlflow-dl promote "
            "--experiment mlflow-dl --model-name mlflow-dl-breast-cancer --dataset breast_cancer") in out.stdout
    local = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    assert local.search_registered_models() == []
    offline = local.search_runs([e.experiment_id for e in local.search_experiments()], max_results=1000)

    server = Server(tmp_path, port=port).start()
    try:
        synced, _ = _cli(["sync"], env, tmp_path, timeout=900)
        assert synced.returncode == 0, synced.stderr[-3000:]
        client = mlflow.MlflowClient(server.url)
        runs = client.search_runs([client.get_experiment_by_name("mlflow-dl").experiment_id], max_results=1000)
        assert len(runs) == len(offline) and {r.info.status for r in runs} == {"FINISHED"}
        parents = {r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags}
        assert all(r.data.tags["mlflow.parentRunId"] in parents for r in runs if r.info.run_id not in parents)
        promoted, _ = _cli(["promote", "--experiment", "mlflow-dl", "--model-name", "mlflow-dl-breast-cancer",
                            "--dataset", "breast_cancer"], env, tmp_path)
        assert promoted.returncode == 0, promoted.stderr[-3000:]
        champion = client.get_model_version_by_alias("mlflow-dl-breast-cancer", "champion")
        assert client.get_run(champion.run_id).data.params["data.dataset"] == "breast_cancer"
    finally:
        server.stop()
