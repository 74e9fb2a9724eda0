"""`mlflow-dl server`: the tracking server, embedded (SQLite) or team (PostgreSQL + basic-auth).

Embedded: `sqlite:///mlflow.db`, proxied artifacts in `./mlartifacts`. Team: PostgreSQL, MLflow's basic-auth
app and an explicit `--allowed-hosts`. It never binds beyond loopback or accepts a wildcard host unless told;
basic-auth refuses to start while the admin keeps MLflow's old public default password.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from dataclasses import dataclass

from mlflow_dl.errors import ConfigError

LOOPBACK = "127.0.0.1"
LEGACY_ADMIN_PASSWORD = "password1234"  # basic_auth.ini of MLflow < 3.17 (GHSA-gq3w-7jj3-x7gr)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerSpec:
    backend_store_uri: str = "sqlite:///mlflow.db"
    artifacts_destination: str = "./mlartifacts"
    host: str = LOOPBACK
    port: int = 5000
    app_name: str | None = None  # None or "basic-auth"
    allowed_hosts: tuple[str, ...] = ()
    workers: int = 1

    def __post_init__(self):
        scheme = self.backend_store_uri.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql"):
            raise ConfigError(f"backend_store_uri={self.backend_store_uri!r} is invalid; "
                              "expected sqlite:///FILE or postgresql://USER@HOST:PORT/DB")
        if self.app_name not in (None, "basic-auth"):
            raise ConfigError(f"app_name={self.app_name!r} is invalid; expected basic-auth or nothing")
        wild = [h for h in self.allowed_hosts if "*" in h or h in ("", "0.0.0.0", "::")]
        if wild:
            raise ConfigError(f"allowed_hosts={','.join(self.allowed_hosts)!r} is invalid; "
                              "expected explicit host names (no wildcard)")
        if self.host in ("0.0.0.0", "::", "*") and not self.allowed_hosts:
            raise ConfigError(f"host={self.host!r} listens on every interface; pass --allowed-hosts with the "
                              "names clients use (e.g. mlflow.team.local:5000), or keep 127.0.0.1")
        if not _is_loopback(self.host) and self.app_name != "basic-auth":
            raise ConfigError(f"host={self.host!r} is reachable from other machines; expected --app-name basic-auth "
                              "with it, or host 127.0.0.1")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port={self.port!r} is invalid; expected 1..65535")

    @property
    def team(self) -> bool:
        return self.backend_store_uri.startswith("postgresql")


def command(spec: ServerSpec) -> list[str]:
    """The `mlflow server` command line for a spec (proxied artifacts: clients never see the folder)."""
    store = spec.backend_store_uri
    if store.startswith("postgresql://"):  # the driver the `team` extra installs (SQLAlchemy's default is psycopg 3)
        store = "postgresql+psycopg2://" + store[len("postgresql://"):]
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
           "--artifacts-destination", spec.artifacts_destination, "--serve-artifacts",
           "--host", spec.host, "--port", str(spec.port), "--workers", str(spec.workers)]
    if spec.allowed_hosts:
        cmd += ["--allowed-hosts", ",".join(spec.allowed_hosts)]
    if spec.app_name:
        cmd += ["--app-name", spec.app_name]
    return cmd


def check_admin_password() -> None:
    """Refuse basic-auth while the admin account can log in with the public default password.

    The auth config (MLFLOW_AUTH_CONFIG_PATH, MLFLOW_AUTH_ADMIN_PASSWORD) decides the
    password of a new admin; an existing auth database decides for an existing one.
    """
    from mlflow.server.auth.config import read_auth_config
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    config = read_auth_config()
    store = SqlAlchemyStore()
    store.init_db(config.database_uri)
    user = config.admin_username or "admin"
    if store.has_user(user):
        if store.authenticate_user(user, LEGACY_ADMIN_PASSWORD):
            raise ConfigError(f"basic-auth admin {user!r} still has the default password; expected a changed one: "
                              "set MLFLOW_AUTH_ADMIN_PASSWORD to a new password and start again (MLflow rotates it)")
        return
    if not config.admin_password or config.admin_password == LEGACY_ADMIN_PASSWORD:
        raise ConfigError("MLFLOW_AUTH_ADMIN_PASSWORD is unset or the default; expected a new admin password "
                          "(or admin_password in the file MLFLOW_AUTH_CONFIG_PATH names)")


def serve(spec: ServerSpec) -> int:
    """Run the server in the foreground until it exits; returns its exit code."""
    if spec.app_name == "basic-auth":
        if not os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
            raise ConfigError("MLFLOW_FLASK_SERVER_SECRET_KEY is unset; expected a secret for basic-auth's CSRF "
                              "tokens (the same on every server of the team)")
        check_admin_password()
    if spec.artifacts_destination and "://" not in spec.artifacts_destination:
        os.makedirs(spec.artifacts_destination, exist_ok=True)
    return subprocess.call(command(spec))
