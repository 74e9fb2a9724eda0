"""Serve a registered model with `mlflow models serve` (the pyfunc carries its preprocessing)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from mlflow_dl.errors import ConfigError


@dataclass(frozen=True)
class ServeSpec:
    """Which registered model to serve, and where (loopback by default)."""

    model_name: str
    alias: str = "champion"
    host: str = "127.0.0.1"
    port: int = 5001

    def __post_init__(self) -> None:
        if not self.model_name:
            raise ConfigError(f"model_name={self.model_name!r} is invalid; expected a registered model name")
        if not 0 < int(self.port) < 65536:
            raise ConfigError(f"port={self.port!r} is invalid; expected an integer in 1..65535")

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}@{self.alias}"


def check_registered(spec: ServeSpec) -> None:
    """NAME@ALIAS is in the registry; otherwise a one-line ConfigError before any server starts (MLflow's
    own answer, `mlflow models serve` failing to resolve it, is a long traceback and exit code 1)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        model = client.get_registered_model(spec.model_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        names = [m.name for m in client.search_registered_models(max_results=10)]
        raise ConfigError(f"model_name={spec.model_name!r} is not a registered model in {mlflow.get_registry_uri()}; "
                          f"expected one of: {', '.join(names) or 'none yet (mlflow-dl promote registers one)'}") from None
    if spec.alias not in (model.aliases or {}):
        raise ConfigError(f"alias={spec.alias!r} is not set on model {spec.model_name!r}; expected one of its aliases: "
                          f"{', '.join(model.aliases or {}) or 'none yet (mlflow-dl promote sets one)'}")


def serve_command(spec: ServeSpec, python: str | None = None) -> list[str]:
    """`mlflow models serve -m models:/NAME@ALIAS --env-manager local -h HOST -p PORT` as argv."""
    return [python or sys.executable, "-m", "mlflow", "models", "serve", "-m", spec.model_uri,
            "--env-manager", "local", "-h", spec.host, "-p", str(spec.port)]


def shell_command(spec: ServeSpec) -> str:
    """The same command as a user types it."""
    return (f"mlflow models serve -m {spec.model_uri} --env-manager local "
            f"-h {spec.host} -p {spec.port}")


def serve(spec: ServeSpec) -> int:
    """Run the scoring server in the foreground until it stops; returns its exit code."""
    return subprocess.call(serve_command(spec))
