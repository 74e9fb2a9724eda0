"""What a logged model must be to be promoted: loadable with Keras' safe_mode, and its inputs (for the
champion's signature check)."""

from __future__ import annotations

import os
import sys
import tempfile

from mlflow_dl.errors import PromotionError


def model_info(uri: str):
    import mlflow

    return mlflow.models.get_model_info(uri)


def input_columns(info) -> tuple[str, ...] | None:
    """The raw columns a logged model takes (mlflow-dl metadata, else the signature's names); for a
    model on named tensors, each input's name, type and shape ("a: float32(-1, 3)"), so that a
    champion on other shapes is a signature change."""
    meta = (info.metadata or {}).get("mlflow_dl") or {}
    if meta.get("input_columns"):
        return tuple(meta["input_columns"])
    if meta.get("input_tensors"):  # the float32 specs the served model checks requests against
        return tuple(f"{t['name'] or 'input'}: {t['dtype']}{tuple(t['shape'])}" for t in meta["input_tensors"])
    schema = info.signature.inputs if info.signature is not None else None
    if schema is not None and schema.is_tensor_spec():
        return tuple(f"{spec.name or 'input'}: {spec.type}{spec.shape}" for spec in schema.inputs)
    if schema is not None and schema.has_input_names():
        return tuple(schema.input_names())
    return None


def check_safe_load(run_id: str, artifact_path: str = "model") -> None:
    """Load the run's Keras file as the served model does (fit/keras_file.py: safe_mode=True, the custom
    classes it names imported from the code it ships); Lambda layers or unknown custom objects refuse."""
    import mlflow
    from mlflow.models import Model

    from mlflow_dl.fit import keras_file

    with tempfile.TemporaryDirectory() as tmp:
        root = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{artifact_path}", dst_path=tmp)
        files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".keras")]
        if not files:
            raise PromotionError(f"run {run_id} has no Keras model under '{artifact_path}'; "
                                 f"expected a model logged by mlflow-dl")
        conf = Model.load(root).flavors.get("python_function", {})
        where = (conf.get("config") or {}).get("custom_objects") or {}  # the pyfunc's model_config
        classes = _custom_classes(run_id, where, os.path.join(root, conf.get("code") or "code"), keras_file)
        for path in files:
            _load(run_id, path, classes, keras_file)


def _custom_classes(run_id: str, where: dict, code: str, keras_file) -> dict:
    """The model's custom classes, imported once, from the code it ships (on sys.path only meanwhile)."""
    if not where:
        return {}
    sys.path.insert(0, code)
    try:
        return keras_file.custom_classes(where)
    except (ImportError, AttributeError) as exc:
        raise PromotionError(f"run {run_id}: the module of the model's classes {sorted(where)} does not import "
                             f"({exc}); expected it in the model's code/ or installed") from None
    finally:
        sys.path.remove(code)


def _load(run_id: str, path: str, classes: dict, keras_file) -> None:
    try:
        keras_file.load(path, classes)
    except Exception as exc:  # Lambda layers raise ValueError, unknown objects TypeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PromotionError(
            f"run {run_id}: {os.path.basename(path)} does not load with keras safe_mode=True "
            f"({type(exc).__name__}: {first[:300]}); expected a model without Lambda layers "
            f"or unregistered custom objects") from None
