"""SimpleRNN / LSTM / GRU stacks for windows of shape (timesteps, features), with a Dense head."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow_dl.config import parse_list
from mlflow_dl.errors import ConfigError

CELLS = {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}


@dataclass(frozen=True)
class RecurrentSpec:
    """`units` per recurrent layer; every layer but the last returns sequences. The last returns
    its final state (flatten=False) or its whole sequence followed by Flatten (flatten=True)."""

    cell: str = "lstm"
    units: tuple[int, ...] = (8, 8)
    activation: str = "tanh"
    flatten: bool = False
    dense: int = 0  # optional Dense layer before the output (0: none)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ConfigError(f"cell={self.cell!r} is invalid; expected one of: {', '.join(CELLS)}")
        units = parse_list(self.units, int, "units")
        object.__setattr__(self, "units", units)
        if not units or any(u <= 0 for u in units):
            raise ConfigError(f"units={','.join(map(str, units))!r} is invalid; expected positive sizes such as '8,8'")
        if self.dense < 0:
            raise ConfigError(f"dense={self.dense!r} is invalid; expected an integer >= 0")


def build_recurrent(spec: RecurrentSpec, timesteps: int, n_features: int, lr: float = 1e-3):
    """Compiled keras.Model: recurrent stack -> (Flatten) -> (Dense) -> Dense(1), MSE loss, Adam."""
    import keras

    layer = getattr(keras.layers, CELLS[spec.cell])
    layers = [keras.Input(shape=(timesteps, n_features), name="window")]
    for i, units in enumerate(spec.units):
        last = i == len(spec.units) - 1
        layers.append(layer(units, activation=spec.activation, return_sequences=not last or spec.flatten,
                            name=f"{spec.cell}_{i}"))
    if spec.flatten:
        layers.append(keras.layers.Flatten(name="flatten"))
    if spec.dense:
        layers.append(keras.layers.Dense(spec.dense, activation="relu", name="dense"))
    layers.append(keras.layers.Dense(1, name="output"))
    model = keras.Sequential(layers, name=f"{spec.cell}_stack")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss="mse", metrics=["mae"])
    return model
