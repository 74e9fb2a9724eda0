"""Log a Keras model as one MLflow pyfunc model (with its preprocessing, or on named tensors), in two steps.

`stage_pipeline_model` / `stage_tensor_model` run while the model trains (logged model created, files
that do not depend on the weights uploaded); `finish_pipeline_model` runs after
fit (the Keras file and MLmodel uploaded, the model READY and linked to its run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata

import mlflow
import pandas as pd
from mlflow.entities import LoggedModel, LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.models.model import MLMODEL_FILE_NAME
from mlflow.utils.file_utils import get_total_file_size

from mlflow_dl.data import preprocessing as preprocessing_module
from mlflow_dl.data.preprocessing import Preprocessing
from mlflow_dl.fit import keras_file

MODEL_CODE = os.path.join(os.path.dirname(__file__), "pyfunc_model.py")  # rows of raw columns
TENSOR_MODEL_CODE = os.path.join(os.path.dirname(__file__), "tensor_model.py")  # named tensors


def _index_installed_packages() -> None:
    """Build, now, the index of installed packages MLflow checks a model's pins against.

    MLflow builds it on first use (pure Python reading every package's file list),
    which would land in the first fit of a process, on a thread that then competes with
    training for the GIL. At import it is a one-off cost, like importing Keras.
    """
    from mlflow.utils import requirements_utils

    try:
        requirements_utils._init_modules_to_packages_map()
    except Exception:  # noqa: BLE001  (MLflow builds it again when it needs it)
        pass


_index_installed_packages()


def pip_requirements() -> list[str]:
    """Explicit pins: inferring them costs seconds a run."""
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


KERAS_FILE = "model.keras"  # the weights inside the pyfunc: artifacts/model.keras


@dataclass(frozen=True)
class StagedModel:
    """A run's logged model (PENDING) whose files are on the server, but for the weights and MLmodel."""

    logged_model: LoggedModel
    path: str  # the saved pyfunc, kept until finish_pipeline_model or discard

    def remove_files(self) -> None:
        shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)


def _pyfunc_metadata(prep: Preprocessing) -> dict:
    return {"mlflow_dl": {"input_columns": list(prep.columns), "task": prep.task, "target": prep.target,
                          **_routing(prep)}}


def output_signature(input_example: pd.DataFrame, output_example: pd.DataFrame) -> ModelSignature:
    """Outputs only: with an input schema MLflow's serving drops unknown columns silently and answers
    missing ones with a schema dump; Preprocessing.transform checks the rows itself (HTTP 400 naming
    the expected columns). The input columns travel in the model's `metadata`.

    Call it on the main thread: it silences MLflow's hint about integer columns (the class column
    is an integer by design), and warning filters are process-wide.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
        return ModelSignature(outputs=infer_signature(input_example.astype("float64"), output_example).outputs)


def stage_pipeline_model(run_id: str, prep: Preprocessing, input_example: pd.DataFrame,
                         signature: ModelSignature, custom_objects: dict[str, str] | None = None) -> StagedModel:
    """While the model trains: create the run's logged model and upload what does not depend on the
    weights (code, preprocessing, requirements, input example), so that after fit only the Keras
    file and MLmodel are left (finish_pipeline_model).
    """
    def extra(root):
        prep_path = os.path.join(root, "preprocessing.json")
        with open(prep_path, "w") as f:
            f.write(prep.to_json())
        code_path = os.path.join(root, "mlflow_dl_preprocessing.py")
        shutil.copyfile(preprocessing_module.__file__, code_path)
        return {"preprocessing": prep_path}, [code_path]

    return _stage(run_id, MODEL_CODE, signature, input_example.astype("float64"), _pyfunc_metadata(prep),
                  _custom(custom_objects), extra)


def stage_tensor_model(run_id: str, signature: ModelSignature, input_example, keyed: bool,
                       custom_objects: dict[str, str] | None = None) -> StagedModel:
    """The same for a model that takes named tensors (several inputs, sequences, images): the
    request's arrays, checked against the inputs of the tensor `signature`, go to the network as a
    dict (`keyed`) or in the signature's order.

    The logged signature keeps the outputs only, and the inputs (names, dtypes, shapes) travel in the
    model's metadata and config: MLflow checks a TensorSpec by exact dtype before `predict` is called,
    so a float32 input would refuse the float64 arrays Keras' own `predict` casts. The served model
    checks them itself and casts what casts safely."""
    specs = [{"name": s.name, "dtype": str(s.type), "shape": list(s.shape)} for s in signature.inputs.inputs]
    return _stage(run_id, TENSOR_MODEL_CODE, ModelSignature(outputs=signature.outputs), input_example,
                  {"mlflow_dl": {"input_tensors": specs}},
                  {"input_tensors": specs, "keyed": keyed, **_custom(custom_objects)}, lambda root: ({}, []))


def _custom(custom: dict[str, str] | None) -> dict:
    return {"custom_objects": custom} if custom else {}


def custom_objects(model) -> dict[str, str]:
    """Keras' name -> "module:Class" of the model's classes that are not Keras' own (a subclassed model, custom
    layers): the served model imports them before loading the Keras file (with safe_mode=True)."""
    import keras

    out = {}
    for obj in [model, *getattr(model, "layers", [])]:
        cls = type(obj)
        if cls.__module__.split(".")[0] not in ("keras", "tf_keras", "tensorflow"):
            out[keras.saving.get_registered_name(cls)] = f"{cls.__module__}:{cls.__qualname__}"
    return out


def _module_files(custom: dict[str, str]) -> list[str]:
    """The files of top-level modules defining custom classes, shipped with the model (a package or a
    notebook's __main__ is not: the serving environment must provide it)."""
    files = []
    for module in sorted({where.partition(":")[0] for where in custom.values()}):
        path = getattr(sys.modules.get(module), "__file__", None)
        if "." not in module and module != "__main__" and path and path.endswith(".py"):
            files.append(path)
    return files


def _stage(run_id, code, signature, input_example, metadata, model_config, extra) -> StagedModel:
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    logged = mlflow.initialize_logged_model(name="model", source_run_id=run_id, experiment_id=run.info.experiment_id,
                                            params=dict(run.data.params))
    root = tempfile.mkdtemp(prefix="mlflow-dl-model-")
    try:
        artifacts, code_paths = extra(root)
        loader = os.path.join(root, "mlflow_dl_keras_file.py")  # how the served model loads its Keras file
        shutil.copyfile(keras_file.__file__, loader)
        placeholder = os.path.join(root, KERAS_FILE)  # replaced by the trained weights
        open(placeholder, "wb").close()
        path = os.path.join(root, "model")
        mlflow.pyfunc.save_model(
            path,
            python_model=code,
            artifacts={"keras_model": placeholder, **artifacts},
            code_paths=[loader, *code_paths] + _module_files(model_config.get("custom_objects") or {}) or None,
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements(),
            metadata=metadata,
            model_config=model_config or None,
            mlflow_model=Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id,
                               model_id=logged.model_id),
        )
        for folder, _, files in os.walk(path):
            rel = os.path.relpath(folder, path)
            for name in files:
                if (rel, name) not in ((".", MLMODEL_FILE_NAME), ("artifacts", KERAS_FILE)):
                    client.log_model_artifact(logged.model_id, os.path.join(folder, name),
                                              None if rel == "." else rel)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        _mark_failed(client, logged.model_id)
        raise
    return StagedModel(logged, path)


def finish_pipeline_model(staged: StagedModel, keras_path: str, step: int = 0,
                          step_metrics: dict[str, tuple[float, int]] | None = None):
    """After fit: the weights in, the model READY and linked to its run at `step`; returns ModelInfo.

    What `mlflow.pyfunc.log_model` ends with, without its two costliest round trips: re-loading
    the model to validate the input example (the caller computed outputs with the same
    preprocessing and weights) and re-reading every metric history for `step`'s values
    (`step_metrics`: key -> (value, timestamp) as logged at `step`, the best epoch).
    """
    client = mlflow.MlflowClient()
    logged, path = staged.logged_model, staged.path
    run_id, model_id = logged.source_run_id, logged.model_id
    try:
        shutil.copyfile(keras_path, os.path.join(path, "artifacts", KERAS_FILE))
        mlflow_model = Model.load(path)
        mlflow_model.model_size_bytes = get_total_file_size(path)
        mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))
        with ThreadPoolExecutor(4) as pool:  # independent round trips, at once
            calls = [pool.submit(client.log_model_artifact, model_id, os.path.join(path, "artifacts", KERAS_FILE),
                                 "artifacts"),
                     pool.submit(client.log_model_artifact, model_id, os.path.join(path, MLMODEL_FILE_NAME)),
                     pool.submit(client.log_outputs, run_id, [LoggedModelOutput(model_id, step=step)])]
            if step_metrics:  # the same points as the run's, now also linked to the model (its page shows them)
                calls.append(pool.submit(client.log_batch, run_id, metrics=[
                    Metric(k, v, ts, step, model_id=model_id) for k, (v, ts) in step_metrics.items()]))
            for call in calls:
                call.result()
    except BaseException:
        _mark_failed(client, model_id)
        raise
    finally:
        staged.remove_files()
    client.finalize_logged_model(model_id, LoggedModelStatus.READY)
    return mlflow_model.get_model_info(logged)


def _mark_failed(client, model_id: str) -> None:
    """After a failed step: the logged model FAILED where the server still answers. The step's own error
    is the one raised (a server gone raises here too, and would hide what went wrong first)."""
    with contextlib.suppress(Exception):
        client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)


def discard(staged: StagedModel) -> None:
    """A fit that ends without a servable model leaves no PENDING model behind."""
    staged.remove_files()
    mlflow.MlflowClient().delete_logged_model(staged.logged_model.model_id)
