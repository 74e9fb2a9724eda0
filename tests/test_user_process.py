"""In a user's own process (autolog, MlflowCallback, the Python API) nothing process-wide outlives a fit:
the host's garbage-collector freeze stays, its signal handlers still run, a read-only working folder
does not break a fit."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap

import keras
import mlflow
import pytest

import mlflow_dl
from conftest import all_runs
from test_autolog import autologged, user_data, user_model  # noqa: F401 - autologged is a fixture
from mlflow_dl.config import FitSpec, ModelSpec, TrialSpec


@pytest.fixture
def host_freeze():
    """The host application froze its heap itself (as a server pre-forking its workers does)."""
    gc.freeze()
    yield gc.get_freeze_count()
    gc.unfreeze()


def still_frozen(host_freeze) -> bool:
    """The host's freeze holds (a frozen object freed since leaves the count: a little lower is the same freeze)."""
    return 0.9 * host_freeze <= gc.get_freeze_count() <= host_freeze


def test_autolog_leaves_the_hosts_gc_freeze_as_it_was(autologged, host_freeze):
    seen = {}
    count = keras.callbacks.LambdaCallback(  # on_train_begin before the tracking callback's, the epoch's after it
        on_train_begin=lambda logs: seen.setdefault("before", gc.get_freeze_count()),
        on_epoch_begin=lambda epoch, logs: seen.setdefault("after", gc.get_freeze_count()))
    x, y = user_data()
    user_model().fit(x, y, validation_split=0.25, epochs=3, verbose=0, callbacks=[count])
    assert seen["after"] <= seen["before"]  # nothing more frozen when fit begins
    assert still_frozen(host_freeze)  # nor unfrozen after it
    (run,) = all_runs()
    assert run.info.status == "FINISHED"


def test_the_python_api_leaves_the_hosts_gc_freeze_as_it_was(host_freeze):
    from mlflow_dl.families import sweep

    mlflow_dl.train(TrialSpec(model=ModelSpec(hidden="4"), fit=FitSpec(epochs=1, patience=None)))
    assert still_frozen(host_freeze)
    sweep("dropout", progress=False, rates="0,0.4", model=ModelSpec(hidden="4"), fit=FitSpec(epochs=1, patience=None))
    assert still_frozen(host_freeze)
    assert sorted(r.info.status for r in all_runs()) == ["FINISHED"] * 4


def test_the_applications_own_ctrl_c_handler_runs_and_the_fit_still_ends_killed(autologged):
    """A handler of the application's own is called at once (as without tracking); the run still ends KILLED
    at the end of the cut epoch, with every whole epoch logged."""
    calls = []

    def own_handler(signum, frame):
        calls.append(signum)

    class CtrlCAt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 0:
                signal.raise_signal(signal.SIGINT)
                assert calls == [signal.SIGINT]  # chained right away, not at the end of the batch

    previous = signal.signal(signal.SIGINT, own_handler)
    try:
        x, y = user_data()
        with pytest.raises(KeyboardInterrupt):
            user_model().fit(x, y, validation_split=0.25, epochs=5, batch_size=8, verbose=0, callbacks=[CtrlCAt()])
        assert signal.getsignal(signal.SIGINT) is own_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls == [signal.SIGINT]
    (run,) = all_runs()
    assert run.info.status == "KILLED"
    steps = sorted(m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_loss"))
    assert steps == [0, 1]


PREEMPTIBLE = textwrap.dedent("""
    import signal, sys, time
    import keras, numpy as np
    import mlflow_dl

    def on_preemption(signum, frame):  # the cluster's handler: say so, as it would before shutting down
        print("preemption handler ran", flush=True)

    signal.signal(signal.SIGTERM, on_preemption)
    mlflow_dl.autolog()
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = x.sum(axis=1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    slow = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda *_, **__: time.sleep(0.02),
        on_epoch_end=lambda epoch, logs=None: print(f"epoch {epoch}", flush=True))
    try:
        model.fit(x, y, validation_split=0.25, epochs=200, batch_size=4, verbose=0, callbacks=[slow])
    except KeyboardInterrupt:
        print("fit interrupted", flush=True)
""")


def test_sigterm_runs_the_applications_own_handler_and_ends_the_run_killed(tmp_path):
    script = tmp_path / "preemptible.py"
    script.write_text(PREEMPTIBLE)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        while not any(line.startswith("epoch 1") for line in lines):  # two whole epochs logged
            line = proc.stdout.readline()
            assert line, proc.communicate(timeout=30)[1][-2000:]
            lines.append(line)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    lines += out.splitlines(keepends=True)
    assert "preemption handler ran\n" in lines, err[-2000:]
    assert lines[-1] == "fit interrupted\n"
    ended = [int(line.split()[1]) for line in lines if line.startswith("epoch ")]  # the last may be cut
    (run,) = all_runs()
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["mlflow_dl.error"]
    steps = sorted(m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_loss"))
    # every whole epoch once: epoch 1 too, whose end the signal may have interrupted
    assert steps == list(range(len(steps))) and len(steps) >= 2 and set(ended) - set(steps) <= {max(ended)}


def _read_only(folder) -> None:
    """Make `folder` unwritable even for root (tests run as root in CI): chmod for anyone else, the
    immutable attribute for root; skip where neither holds."""
    os.chmod(folder, 0o555)
    if os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("root, and no chattr +i here: no folder is read-only")
    try:
        open(os.path.join(folder, "probe"), "w").close()
    except OSError:
        return
    pytest.skip("this folder stayed writable")


def test_a_read_only_working_folder_journals_elsewhere_with_a_one_line_note(autologged, tmp_path, monkeypatch,
                                                                            capfd):
    experiment = mlflow.create_experiment("read-only", artifact_location=str(tmp_path / "artifacts"))
    mlflow.set_experiment(experiment_id=experiment)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    _read_only(work)
    try:
        x, y = user_data()
        user_model().fit(x, y, validation_split=0.25, epochs=3, verbose=0)
        second = user_model()
        second.fit(x, y, validation_split=0.25, epochs=2, verbose=0)  # a second fit: no second note
    finally:
        subprocess.run(["chattr", "-i", str(work)], capture_output=True)
        os.chmod(work, 0o755)
    assert os.listdir(work) == []
    err = capfd.readouterr().err
    notes = [line for line in err.splitlines() if "journal" in line]
    assert len(notes) == 1, err
    assert notes[0].startswith(f"mlflow-dl: cannot write the journal in {work / '.mlflow-dl' / 'journal'} (")
    assert notes[0].endswith(f"journaling to {tmp_path / 'cache' / 'mlflow-dl' / 'journal'} instead "
                             "(`mlflow-dl sync` replays it)")
    runs = sorted(all_runs(), key=lambda r: r.info.start_time)
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    client = mlflow.MlflowClient()
    assert [len(client.get_metric_history(r.info.run_id, "val_loss")) for r in runs] == [3, 2]
    assert "checkpoints" in {f.path for f in client.list_artifacts(runs[0].info.run_id)}
    assert os.listdir(tmp_path / "cache" / "mlflow-dl" / "journal") == []  # delivered: nothing left to sync
