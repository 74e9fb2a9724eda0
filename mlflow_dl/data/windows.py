"""Sliding windows without look-ahead, as strided views (nothing copied).

The series is split chronologically and scaled on the training rows only. A validation or test window may take
its inputs from an earlier part, so every row of a part is a target whatever the window and horizon: all trials
of a comparison are scored on the same rows, and no validation or test value reaches a training input or target.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from mlflow_dl.data.preprocessing import Preprocessing
from mlflow_dl.data.series import SeriesDataset, SeriesSpec, split_bounds
from mlflow_dl.data.split import affine


def window_view(x: np.ndarray, timesteps: int) -> np.ndarray:
    """(n, features) -> (n - timesteps + 1, timesteps, features), a read-only view of x."""
    return np.lib.stride_tricks.sliding_window_view(x, timesteps, axis=0).transpose(0, 2, 1)


def windows(x: np.ndarray, y: np.ndarray, timesteps: int, horizon: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Inputs rows [i, i+timesteps) and target y[i + timesteps - 1 + horizon], both views."""
    n = len(x) - timesteps - horizon + 1
    return window_view(x, timesteps)[:max(n, 0)], y[timesteps + horizon - 1:]


@dataclass(frozen=True)
class SeriesSplits:
    """Scaled rows of the whole series and of each chronological part (views of them), the raw rows,
    and the preprocessing fitted on train."""

    x: dict  # part -> (rows, features) float32, scaled (a view of all_x)
    y: dict  # part -> (rows,) float32, scaled target (a view of all_y)
    y_original: dict  # part -> (rows,) float64
    raw: dict  # part -> DataFrame of raw rows (original column names)
    dates: dict  # part -> DatetimeIndex
    preprocessing: Preprocessing
    all_x: np.ndarray  # every row, scaled
    all_y: np.ndarray
    all_y_original: np.ndarray  # float64
    all_dates: pd.DatetimeIndex
    cuts: dict  # part -> slice of the series' rows

    def rows(self, part: str) -> int:
        return len(self.x[part])


def part_rows(splits: SeriesSplits, part: str, timesteps: int, horizon: int = 1) -> slice:
    """The series' rows a part's windows read: the part, and for validation and test the
    `timesteps + horizon - 1` rows before it (their inputs), so that the part's first row is a target."""
    cut = splits.cuts[part]
    return slice(max(cut.start - (timesteps + horizon - 1), 0), cut.stop)


def part_windows(splits: SeriesSplits, part: str, timesteps: int, horizon: int = 1):
    """(windows, targets) of a part, strided views of the whole series' scaled rows."""
    rows = part_rows(splits, part, timesteps, horizon)
    return windows(splits.all_x[rows], splits.all_y[rows], timesteps, horizon)


def target_index(splits: SeriesSplits, part: str, timesteps: int, horizon: int = 1) -> np.ndarray:
    """Row numbers in the series of the targets of a part's windows: every row of a validation or test
    part; the training rows after the first window + horizon."""
    rows = part_rows(splits, part, timesteps, horizon)
    return np.arange(rows.start + timesteps + horizon - 1, rows.stop)


def split_series(ds: SeriesDataset, spec: SeriesSpec, longest: int | None = None) -> SeriesSplits:
    """Chronological train / validation / test, scalers fitted on the training rows only."""
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    end_train, end_val = split_bounds(len(ds.X), spec, longest)
    cuts = {"train": slice(0, end_train), "val": slice(end_train, end_val), "test": slice(end_val, len(ds.X))}
    train_rows = ds.X.iloc[cuts["train"]]
    a, b = affine((MinMaxScaler() if spec.scaler == "minmax" else StandardScaler()).fit(train_rows))
    y = ds.y.to_numpy(np.float64)
    y_scale, y_offset = 1.0, 0.0
    if spec.scale_y:
        y_offset, y_scale = float(y[cuts["train"]].mean()), float(y[cuts["train"]].std() or 1.0)
    prep = Preprocessing(columns=tuple(map(str, ds.X.columns)), x_scale=tuple(map(float, a)),
                         x_offset=tuple(map(float, b)), task="regression", target=str(ds.y.name),
                         y_scale=y_scale, y_offset=y_offset, window=spec.timesteps, horizon=spec.horizon)
    all_x = replace(prep, window=0).transform(ds.X)
    all_y = ((y - y_offset) / y_scale).astype(np.float32)
    return SeriesSplits(
        x={p: all_x[c] for p, c in cuts.items()},
        y={p: all_y[c] for p, c in cuts.items()},
        y_original={p: y[c] for p, c in cuts.items()},
        raw={p: ds.X.iloc[c].reset_index(drop=True) for p, c in cuts.items()},
        dates={p: ds.dates[c] for p, c in cuts.items()},
        preprocessing=prep, all_x=all_x, all_y=all_y, all_y_original=y, all_dates=ds.dates, cuts=cuts,
    )


def persistence(splits: SeriesSplits, part: str, timesteps: int, horizon: int) -> np.ndarray:
    """The naive forecast for each window's target: the target's value at the window's last row."""
    return splits.all_y_original[target_index(splits, part, timesteps, horizon) - horizon]


def seasonal_naive(splits: SeriesSplits, part: str, timesteps: int, horizon: int, season: int) -> np.ndarray:
    """The value one season before each target (from the part itself or the observed past before it)."""
    rows = target_index(splits, part, timesteps, horizon) - season
    return pd.Series(splits.all_y_original).reindex(rows).to_numpy()
