"""What a keras-tuner search is given, checked and loaded before keras-tuner, TensorFlow or MLflow load.

`plan_search` takes everything the user gives `tune` (data, tuner, space, trials, the distributed-mode
variables, the search id) and fails on the first bad value with a ConfigError or DataError; the data is
loaded and split once, here. sweeps/tuning.py runs the plan.
"""

from __future__ import annotations

import ipaddress
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any

from mlflow_dl.config import DataSpec, FitSpec
from mlflow_dl.errors import ConfigError
from mlflow_dl.sweeps import search_space as space_module


@dataclass(frozen=True)
class SearchPlan:
    """A checked search: the settings, the search space and the data it runs on."""

    data: Any  # DataSpec, or SeriesSpec for model="recurrent"
    tuner: str
    model: str
    space_map: dict
    max_trials: int
    epochs: int
    batch_size: int
    fit: FitSpec
    role: str  # single | chief | worker
    search_id: str
    ds: Any
    splits: Any


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: cannot know where it points


def distributed_role(allow_remote_oracle: bool = False) -> str:
    """single, or chief / worker of keras-tuner's distributed mode (KERASTUNER_* variables).

    The oracle's gRPC service has no authentication: anyone who reaches it can read
    the search and feed it trials. So a non-loopback address needs explicit consent.
    """
    host = os.environ.get("KERASTUNER_ORACLE_IP")
    if not host:
        return "single"
    for var in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        if not os.environ.get(var):
            raise ConfigError(f"{var} is not set; keras-tuner's distributed mode needs KERASTUNER_ORACLE_IP, "
                              "KERASTUNER_ORACLE_PORT and KERASTUNER_TUNER_ID ('chief' or a worker id)")
    if not _loopback(host) and not allow_remote_oracle:
        raise ConfigError(f"KERASTUNER_ORACLE_IP={host!r} is not a loopback address; keras-tuner's oracle "
                          "service has no authentication, so pass --allow-remote-oracle only on a trusted network")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def check_search_id(search_id: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", search_id):
        raise ConfigError(f"search_id={search_id!r} is invalid; expected 1-64 letters, digits, '_', '.' or '-' "
                          "(it names keras-tuner's project folder)")


def plan_search(data=None, tuner: str = "random", max_trials: int = 10, epochs: int = 10, space: str | None = None,
                model: str = "mlp", search_id: str | None = None, batch_size: int = 32,
                allow_remote_oracle: bool = False) -> SearchPlan:
    """Check every setting and load the data; the arguments are `tune`'s."""
    data = data or DataSpec()
    space_map = space_module.load_space(model, space)
    space_module.check_tuner(tuner, space_map)
    if max_trials < 1:
        raise ConfigError(f"max_trials={max_trials!r} is invalid; expected an integer >= 1")
    fit = FitSpec(epochs=epochs, batch_size=batch_size, patience=None, seed=data.seed)
    role = distributed_role(allow_remote_oracle)
    if search_id is None:
        if role == "worker":
            raise ConfigError("search_id is required on a keras-tuner worker; expected the chief's --search-id")
        search_id = f"{tuner}-{uuid.uuid4().hex[:8]}"
    check_search_id(search_id)
    if model == "recurrent":
        from mlflow_dl.data.series import SeriesSpec, load_series
        from mlflow_dl.data.windows import split_series

        if not isinstance(data, SeriesSpec):
            raise ConfigError(f"model='recurrent' needs a time series (SeriesSpec), got {type(data).__name__}")
        ds = load_series(data)
        splits = split_series(ds, data, space_module.longest(space_map))
    else:
        from mlflow_dl.data.datasets import load_dataset
        from mlflow_dl.data.split import split_and_scale

        ds = load_dataset(data.dataset, data.target, data.task, data.dropna)
        splits = split_and_scale(ds, data)
    return SearchPlan(data, tuner, model, space_map, max_trials, epochs, batch_size, fit, role, search_id, ds, splits)
