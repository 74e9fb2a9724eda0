"""The served model of a Keras model that takes named tensors, saved as MLflow "models from code".

MLflow copies this file into the model; it must not import mlflow_dl (only `mlflow_dl_keras_file`, shipped
beside it). The model checks each request
itself against its inputs (model_config "input_tensors": name, dtype, shape per `keras.Input`) and
casts what casts safely (float64 or integers to float32, as Keras does in `predict`): MLflow's own
TensorSpec check refuses any dtype but the declared one, so the signature declares the outputs and
the inputs travel in the model's metadata and config. It takes a dict of arrays, a list of them in
order, one array for one input, or a DataFrame with one column per input; the answer is what
`model.predict` gives, one batch at a time.
"""

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel


def _bad(message: str) -> MlflowException:
    # the scoring server answers INVALID_PARAMETER_VALUE with HTTP 400
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _array(name, value, dtype, shape):
    """One input's values as the declared dtype and shape, or a one-line error naming the input."""
    label = f"input {name!r}" if name is not None else "the input"
    try:
        x = np.asarray(value)
    except ValueError as exc:  # ragged rows
        raise _bad(f"{label}: {exc}; expected {dtype} values of shape {tuple(shape)} (-1: any size)") from None
    inner = shape[1:]
    if x.ndim == 2 and len(shape) > 2 and -1 not in inner and x.shape[1] == int(np.prod(inner)):
        x = x.reshape(-1, *inner)  # rows flattened, as a DataFrame column holds them
    if x.ndim != len(shape) or any(d not in (-1, got) for d, got in zip(inner, x.shape[1:])):
        raise _bad(f"{label}: an array of shape {x.shape}; expected shape {tuple(shape)} (-1: any size)")
    if x.dtype.kind not in "biuf" or not np.can_cast(x.dtype, dtype, casting="same_kind"):
        raise _bad(f"{label}: values of type {x.dtype}; expected numbers ({dtype}, or float64 or integers, "
                   f"which are cast to {dtype})")
    return x.astype(dtype, copy=False)


class KerasTensorModel(PythonModel):
    """A Keras 3 file loaded with safe_mode=True; predicts with predict_on_batch (not model.predict)."""

    def load_context(self, context):
        from mlflow_dl_keras_file import custom_classes, load  # (shipped in code/)

        self.model = load(context.artifacts["keras_model"],
                          custom_classes((context.model_config or {}).get("custom_objects") or {}))
        config = context.model_config or {}
        self._specs = [(s["name"], np.dtype(s["dtype"]), tuple(s["shape"])) for s in config.get("input_tensors") or []]
        self._keyed = bool(config.get("keyed"))

    def _inputs(self, data) -> list:
        """The request's arrays, one per declared input, in order, cast to its dtype."""
        names = [name for name, _, _ in self._specs]
        if hasattr(data, "columns") and hasattr(data, "to_numpy"):  # a DataFrame
            if names == [None]:
                data = data.to_numpy()
            else:
                data = {str(c): data[c].tolist() for c in data.columns}
        if isinstance(data, dict):
            missing = [n for n in names if n not in data]
            extra = [str(k) for k in data if k not in names]
            if missing or extra:
                raise _bad(f"inputs {sorted(map(str, data))}; expected one array per input named {names}"
                           + (f" (missing {missing})" if missing else "") + (f" (unexpected {extra})" if extra else ""))
            values = [data[n] for n in names]
        elif isinstance(data, (list, tuple)) and len(names) > 1:
            if len(data) != len(names):
                raise _bad(f"a list of {len(data)} arrays; expected {len(names)}, one per input {names} in order")
            values = list(data)
        elif len(names) == 1:
            values = [data]
        else:
            raise _bad(f"one {type(data).__name__}; expected one array per input named {names}, as a dict")
        arrays = [_array(name, v, dtype, shape) for (name, dtype, shape), v in zip(self._specs, values)]
        rows = {len(a) for a in arrays}
        if len(rows) > 1:
            raise _bad(f"inputs with different numbers of rows {sorted(rows)}; expected the same rows in every input")
        return arrays

    def predict(self, context, model_input: np.ndarray, params=None):
        # the hint is one MLflow infers no schema from and converts nothing to (no warning, no check);
        # a dict of arrays passes as it is, and _inputs checks and casts it
        import keras

        arrays = self._inputs(model_input)
        names = [name for name, _, _ in self._specs]
        x = dict(zip(names, arrays)) if self._keyed else arrays[0] if len(arrays) == 1 else arrays
        out = self.model.predict_on_batch(x)
        return keras.tree.map_structure(keras.ops.convert_to_numpy, out)


mlflow.models.set_model(KerasTensorModel())
