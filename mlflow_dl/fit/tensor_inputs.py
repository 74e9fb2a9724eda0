"""What a Keras model takes, as named tensors: the served model's tensor signature.

A model taking one table is served by the raw-row pyfunc (columns f0..fN, or a 2-D array); any other gets one
TensorSpec per input, named after its `keras.Input` (or dict key), which model_logging records in the model's
metadata for the served model to check requests against. A subclassed model declares no inputs, so what it was built
on at its first batch (`get_build_config`, public) stands in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec


@dataclass(frozen=True)
class TensorInput:
    """One input of a model: its name (None: a subclassed model's one unnamed array), shape, dtype."""

    name: str | None
    shape: tuple[int | None, ...]  # with the batch dimension first (None)
    dtype: str

    @property
    def spec(self) -> TensorSpec:
        return TensorSpec(np.dtype(self.dtype), tuple(-1 if d is None else int(d) for d in self.shape), self.name)


def _shape(shape) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in shape)


def _input_names(model, declared) -> list[str]:
    """The names of the model's `keras.Input`s, in order. Their tensors' names are not stable (an
    unnamed Input's tensor is `keras_tensor_N`, numbered per process), so the names come from the
    model's config: `input_layers` (Functional) or the first layer (Sequential)."""
    try:
        config = model.get_config()
    except Exception:  # noqa: BLE001  (a Functional subclass without get_config: the tensors' names)
        config = {}
    layers = config.get("input_layers")
    if isinstance(layers, list) and layers and isinstance(layers[0], str):  # one input: [name, 0, 0]
        layers = [layers]
    if isinstance(layers, list) and len(layers) == len(declared):
        return [str(layer[0]) for layer in layers]
    first = (config.get("layers") or [{}])[0]
    if len(declared) == 1 and isinstance(first, dict) and first.get("class_name") == "InputLayer":
        return [str(first["config"]["name"])]
    return [t.name for t in declared]


def model_inputs(model) -> tuple[TensorInput, ...] | None:
    """The inputs of a built model, in the order Keras takes them; None when they cannot be told
    (a subclassed model not built yet, or one whose `call` takes several positional arrays)."""
    declared = getattr(model, "inputs", None)  # Functional and Sequential; None for a subclassed model
    if declared:
        struct = getattr(model, "input", None)
        if isinstance(struct, dict):  # keras.Model({"a": a, "b": b}, ...): fit and predict take these keys
            return tuple(TensorInput(str(k), _shape(t.shape), str(t.dtype)) for k, t in struct.items())
        table = len(declared) == 1 and len(declared[0].shape) == 2  # served as rows: no names needed
        names = [t.name for t in declared] if table else _input_names(model, declared)  # (get_config: ms)
        return tuple(TensorInput(name, _shape(t.shape), str(t.dtype)) for name, t in zip(names, declared))
    if not model.built:
        return None
    config = model.get_build_config() or {}
    shape = config.get("input_shape")
    if isinstance(shape, dict):
        return tuple(TensorInput(str(k), _shape(s), "float32") for k, s in shape.items())
    if isinstance(shape, (tuple, list)) and shape and all(d is None or isinstance(d, int) for d in shape):
        return (TensorInput(None, _shape(shape), "float32"),)
    return None


def keyed(model) -> bool:
    """Whether the model takes its inputs as a dict (a Functional model built on one, or a subclassed
    model first called with one); otherwise as a list in the signature's order, or one array."""
    if getattr(model, "inputs", None):
        return isinstance(getattr(model, "input", None), dict)
    return isinstance((model.get_build_config() or {}).get("input_shape"), dict)


def is_table(inputs: tuple[TensorInput, ...]) -> bool:
    """One 2-D input: rows of columns, served as raw rows (a DataFrame with columns f0..fN)."""
    return len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[-1] is not None


def example(inputs: tuple[TensorInput, ...], rows: int = 2):
    """Zeros shaped like `rows` rows of every input (unknown inner sizes: 1); what `model_inputs` names
    them by: a dict, or one array for an unnamed input."""
    arrays = {i.name: np.zeros((rows, *(1 if d is None else d for d in i.shape[1:])), dtype=i.dtype) for i in inputs}
    return arrays[None] if None in arrays else arrays


def signature(inputs: tuple[TensorInput, ...], output, output_names=None) -> ModelSignature:
    """Inputs as named TensorSpecs; the output as one TensorSpec (or one per named output)."""
    def spec(array, name=None):
        array = np.asarray(array)
        return TensorSpec(array.dtype, (-1, *array.shape[1:]), name)

    if isinstance(output, dict):
        outputs = [spec(v, str(k)) for k, v in output.items()]
    elif isinstance(output, (list, tuple)):
        names = list(output_names or [f"output_{i}" for i in range(len(output))])
        outputs = [spec(v, n) for v, n in zip(output, names)]
    else:
        outputs = [spec(output)]
    return ModelSignature(inputs=Schema([i.spec for i in inputs]), outputs=Schema(outputs))
