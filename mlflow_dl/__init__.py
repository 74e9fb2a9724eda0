"""mlflow-dl: run, track, compare and ship Keras experiments on MLflow.

The public API loads lazily: `import mlflow_dl` imports neither tensorflow nor
mlflow; each name imports its module on first use.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "MlflowCallback": "mlflow_dl.fit.callback",
    "autolog": "mlflow_dl.autologging",
    "train": "mlflow_dl.families.train",
    "sweep_model": "mlflow_dl.families.custom",
    "refine": "mlflow_dl.refinement",
    "TrialSpec": "mlflow_dl.config",
    "DataSpec": "mlflow_dl.config",
    "ModelSpec": "mlflow_dl.config",
    "FitSpec": "mlflow_dl.config",
    "MlflowDLError": "mlflow_dl.errors",
    "ConfigError": "mlflow_dl.errors",
    "DataError": "mlflow_dl.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mlflow_dl' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
