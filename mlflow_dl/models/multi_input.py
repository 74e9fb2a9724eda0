"""Functional-API models: one named input per feature group, each with its own branch, joined by concatenate.

Also the lecture's "different kinds of input": a recurrent branch over a window
of a series beside a Dense branch over static features.
"""

from __future__ import annotations

import keras

from mlflow_dl.config import ModelSpec
from mlflow_dl.models.mlp import HEADS, regularizer


def _head(x, spec: ModelSpec, task: str, n_classes: int):
    """The shared part after concatenate: spec.hidden Dense layers (+ Dropout), then the task's output."""
    for i, units in enumerate(spec.hidden):
        x = keras.layers.Dense(units, activation=spec.activation, kernel_regularizer=regularizer(spec, units),
                               name=f"head_dense_{i}")(x)
        if spec.dropout > 0:
            x = keras.layers.Dropout(spec.dropout, name=f"head_dropout_{i}")(x)
    units_out, activation, _, _ = HEADS[task]
    return keras.layers.Dense(units_out or n_classes, activation=activation, name="output")(x)


def _compile(model: keras.Model, task: str, lr: float) -> keras.Model:
    _, _, loss, metrics = HEADS[task]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss, metrics=metrics())
    return model


def build_multi_input(group_sizes: dict[str, int], branch_units: int, spec: ModelSpec, task: str,
                      n_classes: int = 0, lr: float = 1e-3) -> keras.Model:
    """keras.Input(name=group) -> Dense(branch_units) per group -> concatenate -> shared head."""
    inputs, branches = [], []
    for name, size in group_sizes.items():
        x = keras.Input(shape=(size,), name=name)
        inputs.append(x)
        branches.append(keras.layers.Dense(branch_units, activation=spec.activation, name=f"{name}_dense")(x))
    joined = keras.layers.concatenate(branches, name="concat")
    model = keras.Model(inputs=inputs, outputs=_head(joined, spec, task, n_classes), name="multi_input")
    return _compile(model, task, lr)


def build_mixed(timesteps: int, series_features: int, static_features: int, recurrent_units: int,
                static_units: int, spec: ModelSpec, task: str, n_classes: int = 0, lr: float = 1e-3,
                cell: str = "LSTM") -> keras.Model:
    """Inputs `series` (timesteps x features, through an LSTM/GRU/SimpleRNN) and `static` (through Dense)."""
    series = keras.Input(shape=(timesteps, series_features), name="series")
    static = keras.Input(shape=(static_features,), name="static")
    recurrent = getattr(keras.layers, cell)(recurrent_units, name=f"series_{cell.lower()}")(series)
    dense = keras.layers.Dense(static_units, activation=spec.activation, name="static_dense")(static)
    joined = keras.layers.concatenate([recurrent, dense], name="concat")
    model = keras.Model(inputs=[series, static], outputs=_head(joined, spec, task, n_classes), name="mixed_input")
    return _compile(model, task, lr)


def dense_params(sizes: list[int]) -> int:
    """Weights + biases of a Dense stack with these layer widths (input first, output last)."""
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def matching_width(n_features: int, target_params: int, head: tuple[int, ...], n_out: int) -> int:
    """Width of the baseline's first hidden layer whose whole MLP is closest to `target_params` weights."""
    best, best_gap = 1, None
    for width in range(1, max(2, target_params // max(1, n_features) + 2)):
        gap = abs(dense_params([n_features, width, *head, n_out]) - target_params)
        if best_gap is None or gap < best_gap:
            best, best_gap = width, gap
    return best
