"""`mlflow-dl server`: embedded SQLite on loopback; team mode on PostgreSQL with basic-auth."""

from __future__ import annotations

import base64
import os
import subprocess
import urllib.error
import urllib.request

import mlflow
import pytest

from conftest import free_port, mlflow_dl_cli
from servers import Server, postgres_uri  # noqa: F401  (fixture)


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of listening TCP sockets on `port`, from /proc/net/tcp (hex, little-endian IPv4)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":
            found.add(".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def _get(url: str, auth: tuple[str, str] | None = None, host: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_embedded_server_is_sqlite_with_proxied_artifacts_on_loopback(tmp_path, no_store):
    server = Server(tmp_path).start()
    try:
        assert _listening_addresses(server.port) == {"127.0.0.1"}
        client = mlflow.MlflowClient(server.url)
        run = client.create_run(client.create_experiment("e"))
        (tmp_path / "note.txt").write_text("hello")
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"), "docs")
        assert (tmp_path / "mlflow.db").exists()
        stored = list((tmp_path / "mlartifacts").rglob("note.txt"))
        assert [p.read_text() for p in stored] == ["hello"]
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # clients upload through the server
    finally:
        server.stop()


@pytest.mark.parametrize("args, message", [
    (["--allowed-hosts", "*"], "no wildcard"),
    (["--host", "0.0.0.0"], "--allowed-hosts"),
    (["--host", "10.1.2.3", "--allowed-hosts", "mlflow.team"], "basic-auth"),
    (["--backend-store-uri", "mysql://x/db"], "backend_store_uri"),
])
def test_server_refuses_open_or_unknown_settings(tmp_path, args, message):
    out = subprocess.run(mlflow_dl_cli() + ["server"] + args, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def _auth_env(tmp_path, password=None):
    config = tmp_path / "auth.ini"
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{tmp_path / 'auth.db'}\nadmin_username = admin\n")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-csrf-secret"}
    env.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    if password:
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
    return env


def test_team_server_refuses_default_admin_password(tmp_path, postgres_uri):
    base = ["server", "--backend-store-uri", postgres_uri, "--app-name", "basic-auth", "--allowed-hosts", "127.0.0.1"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"}
    out = subprocess.run(mlflow_dl_cli() + base, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env={**env, **_auth_env(tmp_path)})
    assert out.returncode == 2 and "MLFLOW_AUTH_ADMIN_PASSWORD" in out.stderr, out.stderr
    # an auth database made by an older MLflow: admin still has the shipped default password
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(f"sqlite:///{tmp_path / 'auth.db'}")
    store.create_user("admin", "password1234", is_admin=True)
    store.engine.dispose()
    out = subprocess.run(mlflow_dl_cli() + base, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env={**env, **_auth_env(tmp_path)})
    assert out.returncode == 2 and "default password" in out.stderr, out.stderr


def test_team_server_postgres_basic_auth_allowed_hosts(tmp_path, postgres_uri):
    port = free_port()
    server = Server(tmp_path, "--backend-store-uri", postgres_uri, "--app-name", "basic-auth",
                    "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}", port=port,
                    env=_auth_env(tmp_path, "S3cret-team-pass!"))
    server.start()
    try:
        api = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=5"
        assert _get(api) == 401
        assert _get(api, auth=("admin", "wrong")) == 401
        assert _get(api, auth=("admin", "S3cret-team-pass!")) == 200
        assert _get(api, auth=("admin", "S3cret-team-pass!"), host="evil.example:80") in (400, 403)
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "admin", "S3cret-team-pass!"
        try:
            client = mlflow.MlflowClient(server.url)
            run = client.create_run(client.create_experiment("team"))
            client.log_metric(run.info.run_id, "m", 1.0)
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
        import psycopg2

        with psycopg2.connect(postgres_uri) as conn:  # the run is in PostgreSQL, not in a file
            cur = conn.cursor()
            cur.execute("SELECT count(*) FROM metrics WHERE run_uuid = %s", (run.info.run_id,))
            assert cur.fetchone()[0] == 1
    finally:
        server.stop()
