"""The served model, saved as MLflow "models from code" (no pickle).

MLflow copies this file into the model; it must not import mlflow_dl, only the
copies of mlflow_dl/data/preprocessing.py and fit/keras_file.py that travel with it
in code/ as `mlflow_dl_preprocessing` and `mlflow_dl_keras_file`. Requests hold raw rows with the original column
names, or a 2-D array of them in order (as a numpy `fit` took them); the model
applies the training-time preprocessing itself.
"""

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel


class KerasPipelineModel(PythonModel):
    """Keras model + preprocessing; predicts with predict_on_batch (not model.predict)."""

    def load_context(self, context):
        from mlflow_dl_keras_file import custom_classes, load
        from mlflow_dl_preprocessing import InputError, Preprocessing

        self._input_error = InputError
        self.model = load(context.artifacts["keras_model"],
                          custom_classes((context.model_config or {}).get("custom_objects") or {}))
        with open(context.artifacts["preprocessing"]) as f:
            self.prep = Preprocessing.from_json(f.read())

    def predict(self, context, model_input: pd.DataFrame, params=None):
        # the hint is one MLflow infers no schema from and converts nothing to (no warning, no check):
        # the signature is given at logging, and Preprocessing checks the rows itself, a DataFrame
        # with the columns or a 2-D array of them in order
        try:
            x = self.prep.transform(self.prep.rows(model_input))
        except (self._input_error, ValueError, TypeError) as exc:
            # the scoring server answers INVALID_PARAMETER_VALUE with HTTP 400
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        return self.prep.outputs(self.model.predict_on_batch(x))


mlflow.models.set_model(KerasPipelineModel())
