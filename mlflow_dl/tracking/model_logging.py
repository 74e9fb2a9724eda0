"""Log a Keras model with its preprocessing as one MLflow pyfunc model."""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib import metadata

import mlflow
import pandas as pd
from mlflow.models import ModelSignature, infer_signature

from mlflow_dl.data import preprocessing as preprocessing_module
from mlflow_dl.data.preprocessing import Preprocessing

MODEL_CODE = os.path.join(os.path.dirname(__file__), "pyfunc_model.py")


def pip_requirements() -> list[str]:
    """Explicit pins: inferring them costs about 8 s a run."""
    pins = []
    for dist in ("mlflow", "keras", "tensorflow", "numpy", "pandas"):
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return pins


def _routing(prep: Preprocessing) -> dict:
    """What the model does with the columns before the network: named input groups, PCA components.

    It stands in for an input schema with one named input per group: MLflow's would make the
    server drop or reject columns on its own terms, while the model routes one DataFrame itself.
    """
    out = {}
    if prep.groups:
        out["input_groups"] = {name: list(cols) for name, cols in prep.groups.items()}
    if prep.pca_components is not None:
        out["pca_components"] = len(prep.pca_components)
    return out


def log_pipeline_model(
    keras_path: str,
    prep: Preprocessing,
    input_example: pd.DataFrame,
    output_example: pd.DataFrame,
    name: str = "model",
    step: int = 0,
):
    """Log `keras_path` + `prep` under the active run as a pyfunc model; returns ModelInfo.

    `step` is the epoch whose metrics MLflow links to the logged model (the best one).
    """
    with tempfile.TemporaryDirectory() as tmp:
        prep_path = os.path.join(tmp, "preprocessing.json")
        with open(prep_path, "w") as f:
            f.write(prep.to_json())
        code_path = os.path.join(tmp, "mlflow_dl_preprocessing.py")
        shutil.copyfile(preprocessing_module.__file__, code_path)
        # Output schema only: with an input schema MLflow's serving drops unknown columns silently
        # and answers missing ones with a schema dump; Preprocessing.transform checks the rows
        # itself (HTTP 400 naming the expected columns). The input columns travel in `metadata`.
        signature = ModelSignature(outputs=infer_signature(input_example.astype("float64"), output_example).outputs)
        return mlflow.pyfunc.log_model(
            name=name,
            step=step,
            python_model=MODEL_CODE,
            artifacts={"keras_model": keras_path, "preprocessing": prep_path},
            code_paths=[code_path],
            signature=signature,
            input_example=input_example.astype("float64"),
            pip_requirements=pip_requirements(),
            metadata={"mlflow_dl": {"input_columns": list(prep.columns), "task": prep.task,
                                    "target": prep.target, **_routing(prep)}},
        )
