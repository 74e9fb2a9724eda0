"""One window length's splits of a series: Keras batches of (window, target) for each part.

Every window length is scored on the same target rows (every row of the validation and
test parts; a window's inputs may come from the part before), so the children of a
comparison, and the trials of a search over `timesteps`, compare like with like.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class WindowSplits:
    """What run_trial needs, for one window length: batches streamed from the scaled rows of each part."""

    x_train: object  # WindowBatches: (window, target) batches, so the y_* fields are None
    x_val: object
    x_test: object
    preprocessing: object
    raw_test: pd.DataFrame  # raw test rows, what the served model takes
    y_test_original: np.ndarray  # the targets of the test windows, original scale
    test_dates: pd.DatetimeIndex  # the dates of those targets
    persistence: np.ndarray  # the naive forecast of each test target
    scored: dict  # params that say which target rows validation and test scored (rows, first and last date)
    y_train: None = None
    y_val: None = None
    y_test: None = None
    n_classes: int = 0


def window_splits(series, timesteps: int, horizon: int, batch_size: int, seed: int) -> WindowSplits:
    """Windows of `timesteps` rows: training ones inside the training part (batches shuffled, seeded);
    validation and test ones with a target on every row of their part, inputs from the rows before it."""
    from mlflow_dl.data.windows import part_rows, persistence
    from mlflow_dl.models.window_feed import WindowBatches

    def feed(part, shuffle=False):
        rows = part_rows(series, part, timesteps, horizon)
        return WindowBatches(series.all_x[rows], series.all_y[rows], timesteps, horizon, batch_size, shuffle, seed)

    return WindowSplits(
        x_train=feed("train", shuffle=True), x_val=feed("val"), x_test=feed("test"),
        preprocessing=replace(series.preprocessing, window=timesteps, horizon=horizon),
        raw_test=series.raw["test"], y_test_original=series.y_original["test"],
        test_dates=series.dates["test"], persistence=persistence(series, "test", timesteps, horizon),
        scored=scored_rows(series),
    )


def scored_rows(series) -> dict[str, str]:
    """Which target rows validation and test score: their count, first and last date (the same for every
    window length, so a user can see that the children of a comparison were scored alike)."""
    def when(ts):  # the day, or the time too for a series finer than daily
        return str(ts.date()) if ts == ts.normalize() else str(ts)

    out = {}
    for part in ("val", "test"):
        dates = series.dates[part]
        out.update({f"{part}_rows": str(len(dates)), f"{part}_first_target": when(dates[0]),
                    f"{part}_last_target": when(dates[-1])})
    return out
