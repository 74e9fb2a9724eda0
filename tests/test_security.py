"""Security: no credentials in params or tags or journals, artifact paths kept inside the run, loopback by default."""

from __future__ import annotations

import os
import subprocess

import mlflow
import pytest

from conftest import mlflow_dl_cli
from mlflow_dl.errors import ConfigError


def test_credentials_in_the_tracking_uri_are_never_logged(tmp_path, mlflow_server):
    secret_uri = mlflow_server.replace("http://", "http://alice:Top-Secret-42@")
    out = subprocess.run(mlflow_dl_cli() + ["sweep", "dropout", "--rates", "0,0.2", "--epochs", "1", "--hidden", "4",
                                            "--experiment", "security"],
                         cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": secret_uri},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    client = mlflow.MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("security").experiment_id])
    assert len(runs) == 3
    for run in runs:
        logged = " ".join(f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items())
        assert "Top-Secret-42" not in logged and run.data.params  # (the run does hold params)
    kept = [p.read_text() for p in (tmp_path / ".mlflow-dl").rglob("*") if p.is_file() and p.suffix == ".jsonl"]
    assert not any("Top-Secret-42" in text for text in kept)
    assert "Top-Secret-42" not in out.stdout + out.stderr


def test_redact_keeps_user_and_host_drops_password():
    from mlflow_dl.delivery.uris import redact

    assert redact("http://bob:pw@10.0.0.5:5000/prefix") == "http://bob@10.0.0.5:5000/prefix"
    assert redact("https://mlflow.team.local") == "https://mlflow.team.local"


def test_artifact_paths_are_normalised_and_kept_inside_the_run(tmp_path):
    from mlflow_dl.delivery import spool, uris
    from mlflow_dl.delivery.logger import BackgroundLogger

    client = mlflow.MlflowClient()
    run_id = client.create_run(client.create_experiment("paths")).info.run_id
    logger = BackgroundLogger(client, run_id, spool.Journal(mlflow.get_tracking_uri(), run_id))
    note = tmp_path / "note.txt"
    note.write_text("x")
    for escaping in ("../outside", "/etc", "notes/../../outside", "C:/windows"):
        with pytest.raises(ConfigError, match="artifact_path="):
            logger.log_artifact(str(note), escaping)
    logger.log_artifact(str(note), "notes/./drafts/..")
    assert logger.flush(timeout=30)
    assert [a.path for a in client.list_artifacts(run_id, "notes")] == ["notes/note.txt"]
    assert not list(tmp_path.parent.rglob("outside"))
    assert uris.artifact_path(".") is None


def test_servers_default_to_loopback():
    from mlflow_dl.registry.team_server import ServerSpec, command
    from mlflow_dl.registry.serving import ServeSpec, serve_command

    assert command(ServerSpec())[command(ServerSpec()).index("--host") + 1] == "127.0.0.1"
    assert serve_command(ServeSpec("m"))[serve_command(ServeSpec("m")).index("-h") + 1] == "127.0.0.1"
