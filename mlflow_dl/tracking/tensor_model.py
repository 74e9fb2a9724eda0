"""The served model of a Keras model that takes named tensors, saved as MLflow "models from code".

MLflow copies this file into the model; it must not import mlflow_dl. MLflow checks and
casts each request against the tensor signature (one TensorSpec per input, named after
its `keras.Input`) and hands over a dict of arrays, or one array for a subclassed
model's unnamed input; the answer is what `model.predict` gives, one batch at a time.
"""

import importlib

import mlflow
from mlflow.pyfunc import PythonModel


class KerasTensorModel(PythonModel):
    """A Keras 3 file loaded with safe_mode=True; predicts with predict_on_batch (not model.predict)."""

    def load_context(self, context):
        import keras

        # a subclassed model's or custom layer's class, from the code shipped with the model
        custom = {name: getattr(importlib.import_module(where.partition(":")[0]), where.partition(":")[2])
                  for name, where in ((context.model_config or {}).get("custom_objects") or {}).items()}
        self.model = keras.saving.load_model(context.artifacts["keras_model"], custom_objects=custom, compile=False,
                                             safe_mode=True)
        config = context.model_config or {}
        self._names, self._keyed = config.get("inputs") or [], bool(config.get("keyed"))

    def _arrange(self, x):
        """The signature's arrays as the model's call takes them: a dict, a list in order, or one array."""
        if not isinstance(x, dict):
            return x
        arrays = [x[name] for name in self._names]
        if self._keyed:
            return dict(zip(self._names, arrays))
        return arrays[0] if len(arrays) == 1 else arrays

    def predict(self, context, model_input, params=None):
        import keras

        out = self.model.predict_on_batch(self._arrange(model_input))
        return keras.tree.map_structure(keras.ops.convert_to_numpy, out)


mlflow.models.set_model(KerasTensorModel())
