"""Sliding windows without look-ahead, as strided views (nothing copied).

The series is split chronologically first, the scalers are fitted on the
training rows only, and windows are cut inside each part: no validation or test
value ever reaches a training input or target.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from mlflow_dl.data.preprocessing import Preprocessing
from mlflow_dl.data.series import SeriesDataset, SeriesSpec, split_bounds
from mlflow_dl.data.split import _affine

PARTS = ("train", "val", "test")


def window_view(x: np.ndarray, timesteps: int) -> np.ndarray:
    """(n, features) -> (n - timesteps + 1, timesteps, features), a read-only view of x."""
    return np.lib.stride_tricks.sliding_window_view(x, timesteps, axis=0).transpose(0, 2, 1)


def windows(x: np.ndarray, y: np.ndarray, timesteps: int, horizon: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Inputs rows [i, i+timesteps) and target y[i + timesteps - 1 + horizon], both views."""
    n = len(x) - timesteps - horizon + 1
    return window_view(x, timesteps)[:max(n, 0)], y[timesteps + horizon - 1:]


def target_rows(n: int, timesteps: int, horizon: int = 1) -> np.ndarray:
    """Row numbers (inside a part of n rows) of the targets its windows predict."""
    return np.arange(timesteps + horizon - 1, n)


@dataclass(frozen=True)
class SeriesSplits:
    """Scaled rows of each chronological part, the raw rows, and the preprocessing fitted on train."""

    x: dict  # part -> (rows, features) float32, scaled
    y: dict  # part -> (rows,) float32, scaled target
    y_original: dict  # part -> (rows,) float64
    raw: dict  # part -> DataFrame of raw rows (original column names)
    dates: dict  # part -> DatetimeIndex
    preprocessing: Preprocessing

    def rows(self, part: str) -> int:
        return len(self.x[part])


def split_series(ds: SeriesDataset, spec: SeriesSpec, longest: int | None = None) -> SeriesSplits:
    """Chronological train / validation / test, scalers fitted on the training rows only."""
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    end_train, end_val = split_bounds(len(ds.X), spec, longest)
    cuts = {"train": slice(0, end_train), "val": slice(end_train, end_val), "test": slice(end_val, None)}
    train_rows = ds.X.iloc[cuts["train"]]
    a, b = _affine((MinMaxScaler() if spec.scaler == "minmax" else StandardScaler()).fit(train_rows))
    y = ds.y.to_numpy(np.float64)
    y_scale, y_offset = 1.0, 0.0
    if spec.scale_y:
        y_offset, y_scale = float(y[cuts["train"]].mean()), float(y[cuts["train"]].std() or 1.0)
    prep = Preprocessing(columns=tuple(map(str, ds.X.columns)), x_scale=tuple(map(float, a)),
                         x_offset=tuple(map(float, b)), task="regression", target=str(ds.y.name),
                         y_scale=y_scale, y_offset=y_offset, window=spec.timesteps, horizon=spec.horizon)
    raw = {p: ds.X.iloc[c].reset_index(drop=True) for p, c in cuts.items()}
    return SeriesSplits(
        x={p: replace(prep, window=0).transform(raw[p]) for p in PARTS},
        y={p: ((y[c] - y_offset) / y_scale).astype(np.float32) for p, c in cuts.items()},
        y_original={p: y[c] for p, c in cuts.items()},
        raw=raw,
        dates={p: ds.dates[c] for p, c in cuts.items()},
        preprocessing=prep,
    )


def persistence(splits: SeriesSplits, part: str, timesteps: int, horizon: int) -> np.ndarray:
    """The naive forecast for each window's target: the target's value at the window's last row."""
    rows = target_rows(splits.rows(part), timesteps, horizon) - horizon
    return splits.y_original[part][rows]


def seasonal_naive(splits: SeriesSplits, part: str, timesteps: int, horizon: int, season: int) -> np.ndarray:
    """The value one season before each target (from the part itself or the observed past before it)."""
    history = np.concatenate([splits.y_original[p] for p in PARTS[:PARTS.index(part) + 1]])
    offset = len(history) - splits.rows(part)
    rows = offset + target_rows(splits.rows(part), timesteps, horizon) - season
    return pd.Series(history).reindex(rows).to_numpy()
