"""The fitted preprocessing a model carries: column order and the scalers.

Plain numpy so the served model applies exactly what training applied, fast,
without unpickling anything: it is stored as JSON next to the Keras file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd


class InputError(ValueError):
    """Rows that do not match the columns the model was trained on."""


@dataclass(frozen=True)
class Preprocessing:
    """x_scaled = x * x_scale + x_offset; y_original = y_scaled * y_scale + y_offset.

    Optional, after scaling: a PCA projection (x_scaled - pca_mean) @ pca_components.T,
    or `groups` (input name -> its columns), which makes transform return one array
    per named input of a multi-input model.
    """

    columns: tuple[str, ...]
    x_scale: tuple[float, ...]
    x_offset: tuple[float, ...]
    task: str
    target: str
    classes: tuple | None = None
    y_scale: float = 1.0
    y_offset: float = 0.0
    groups: dict[str, tuple[str, ...]] | None = None
    pca_mean: tuple[float, ...] | None = None
    pca_components: tuple[tuple[float, ...], ...] | None = None
    window: int = 0  # time series: transform returns every window of this many consecutive rows
    horizon: int = 1  # time series: a window predicts the target this many rows after its last row

    def check_columns(self, frame: pd.DataFrame) -> None:
        got = [str(c) for c in frame.columns]
        missing = [c for c in self.columns if c not in got]
        extra = [c for c in got if c not in self.columns]
        if missing or extra or len(frame) == 0:
            problem = []
            if missing:
                problem.append(f"missing columns {missing}")
            if extra:
                problem.append(f"unexpected columns {extra}")
            if len(frame) == 0:
                problem.append("no rows")
            raise InputError(f"{'; '.join(problem)}; expected rows with the columns {list(self.columns)}")

    def rows(self, data) -> pd.DataFrame:
        """What a request holds -> rows with the model's columns: a DataFrame as it is, or a 2-D array
        (float32 or float64, as `fit` took it) whose columns are the model's, in their order. A DataFrame
        with pandas' default column labels 0..n-1 (`pd.DataFrame(array)`) counts as such an array."""
        if isinstance(data, pd.DataFrame):
            if not isinstance(data.columns, pd.RangeIndex) or [str(c) for c in data.columns] == list(self.columns):
                return data
            data = data.to_numpy()
        if isinstance(data, dict):
            return pd.DataFrame(data)
        x = np.asarray(data)
        if x.ndim != 2 or x.shape[1] != len(self.columns):
            raise InputError(f"an array of shape {x.shape}; expected rows of {len(self.columns)} values "
                             f"(shape (n, {len(self.columns)})) in the order of the columns {list(self.columns)}, "
                             f"or a DataFrame with those columns")
        return pd.DataFrame(x, columns=list(self.columns))

    def transform(self, frame: pd.DataFrame) -> np.ndarray | dict[str, np.ndarray]:
        """Raw rows (original column names, any order) -> scaled float32 matrix (or one per group)."""
        self.check_columns(frame)
        try:
            x = frame[list(self.columns)].to_numpy(dtype=np.float32)
        except (TypeError, ValueError) as exc:
            bad = [c for c in self.columns if not pd.api.types.is_numeric_dtype(frame[c])]
            raise InputError(f"non-numeric values in columns {bad or list(self.columns)}: {exc}; "
                             f"expected numbers in the columns {list(self.columns)}") from None
        if not np.isfinite(x).all():
            bad = [c for c, ok in zip(self.columns, np.isfinite(x).all(axis=0)) if not ok]
            raise InputError(f"missing or infinite values in columns {bad}; "
                             f"expected numbers in the columns {list(self.columns)}")
        x = x * np.asarray(self.x_scale, np.float32) + np.asarray(self.x_offset, np.float32)
        if self.pca_components is not None:
            x = (x - np.asarray(self.pca_mean, np.float32)) @ np.asarray(self.pca_components, np.float32).T
        if self.window:
            return self.windows(x)
        if self.groups is None:
            return x
        index = {c: i for i, c in enumerate(self.columns)}
        return {name: x[:, [index[c] for c in cols]] for name, cols in self.groups.items()}

    def windows(self, x: np.ndarray) -> np.ndarray:
        """Scaled rows (oldest first) -> every complete window, (n - window + 1, window, features)."""
        if len(x) < self.window:
            raise InputError(f"{len(x)} rows, fewer than the {self.window} consecutive rows one window needs; "
                             f"send at least {self.window} rows, oldest first")
        return np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(x, self.window, axis=0).transpose(0, 2, 1))

    def inverse_y(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, np.float64) * self.y_scale + self.y_offset

    def outputs(self, raw: np.ndarray) -> pd.DataFrame:
        """Network outputs -> what a user reads: class and probability, or the value."""
        raw = np.asarray(raw)
        if self.task == "raw":  # a user's own model: outputs as they come
            flat = raw.reshape(len(raw), -1)
            return pd.DataFrame(flat, columns=[f"output_{i}" for i in range(flat.shape[1])])
        if self.task == "regression":
            return pd.DataFrame({"prediction": self.inverse_y(raw.reshape(len(raw), -1)[:, 0])})
        classes = np.asarray(self.classes, dtype=object)
        if self.task == "binary":
            p = raw.reshape(-1).astype(np.float64)
            return pd.DataFrame({"probability": p, "class": classes[(p >= 0.5).astype(int)]})
        idx = raw.argmax(axis=1)
        return pd.DataFrame({"probability": raw.max(axis=1).astype(np.float64), "class": classes[idx]})

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Preprocessing":
        d = json.loads(text)
        for key in ("columns", "x_scale", "x_offset", "classes", "pca_mean"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        if d.get("pca_components") is not None:
            d["pca_components"] = tuple(map(tuple, d["pca_components"]))
        if d.get("groups") is not None:
            d["groups"] = {name: tuple(cols) for name, cols in d["groups"].items()}
        return cls(**d)
