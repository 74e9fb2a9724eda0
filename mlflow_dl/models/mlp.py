"""Sequential MLP from a ModelSpec, with output and loss inferred from the task."""

from __future__ import annotations

import keras

from mlflow_dl.config import ModelSpec

HEADS = {
    # task: (units or None for n_classes, activation, loss, metrics)
    "binary": (1, "sigmoid", "binary_crossentropy", lambda: ["accuracy", keras.metrics.AUC(name="auc")]),
    "multiclass": (None, "softmax", "sparse_categorical_crossentropy", lambda: ["accuracy"]),
    "regression": (1, "linear", "mse", lambda: ["mae"]),
}


def regularizer(spec: ModelSpec, units: int):
    """L1/L2 for a hidden layer of `units`, honouring reg_layers=all|widest."""
    if spec.l1 == 0 and spec.l2 == 0:
        return None
    if spec.reg_layers == "widest" and units != max(spec.hidden):
        return None
    return keras.regularizers.L1L2(l1=spec.l1, l2=spec.l2)


def build_mlp(spec: ModelSpec, n_features: int, task: str, n_classes: int = 0, lr: float = 1e-3) -> keras.Model:
    """Dense stack (+ Dropout after each hidden layer), compiled with Adam."""
    units_out, activation, loss, metrics = HEADS[task]
    layers = [keras.Input(shape=(n_features,), name="features")]
    widest_done = False
    for i, units in enumerate(spec.hidden):
        reg = regularizer(spec, units)
        if spec.reg_layers == "widest" and reg is not None:
            reg = None if widest_done else reg  # only the first widest layer
            widest_done = True
        layers.append(keras.layers.Dense(units, activation=spec.activation, kernel_regularizer=reg, name=f"dense_{i}"))
        if spec.dropout > 0:
            layers.append(keras.layers.Dropout(spec.dropout, name=f"dropout_{i}"))
    layers.append(keras.layers.Dense(units_out or n_classes, activation=activation, name="output"))
    model = keras.Sequential(layers, name="mlp")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss, metrics=metrics())
    return model
