"""Time series: bundled (statsmodels' datasets) or a CSV with a date column, checked for equal spacing.

Duplicates, unsorted rows, gaps and missing values are errors unless `resample` or `interpolate` is asked for.
Filling never uses a later part of the chronological split, so nothing leaks from validation or test.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlflow_dl.data.datasets import Dataset, check_target, read_csv, short_list
from mlflow_dl.errors import ConfigError, DataError

SCALERS = ("minmax", "standard")
# name: default target (the season comes from the frequency: co2 weekly 52, macrodata quarterly 4, sunspots none)
BUNDLED_SERIES = {"co2": "co2", "macrodata": "realgdp", "sunspots": "SUNACTIVITY"}


@dataclass(frozen=True)
class SeriesSpec:
    """Where the series comes from, how it is filled, split and windowed."""

    dataset: str = "sunspots"
    target: str | None = None
    date_column: str | None = None
    timesteps: int = 8
    horizon: int = 1
    season: int | None = None  # None: from the frequency (daily 7, weekly 52, ...); 0: none
    resample: str | None = None
    interpolate: bool = False
    scaler: str = "minmax"
    scale_y: bool = True
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ConfigError(f"dataset={self.dataset!r} is invalid; expected {', '.join(BUNDLED_SERIES)} or a CSV path")
        for name in ("timesteps", "horizon"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} is invalid; expected an integer >= 1")
        if self.season is not None and self.season < 0:
            raise ConfigError(f"season={self.season!r} is invalid; expected 0 (none) or a period >= 2")
        if self.scaler not in SCALERS:
            raise ConfigError(f"scaler={self.scaler!r} is invalid; expected {' or '.join(SCALERS)}")
        for name in ("val_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} is invalid; expected a fraction in (0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(f"val_fraction + test_fraction={self.val_fraction + self.test_fraction!r} is invalid; "
                              "expected a sum below 1")
        if self.resample:
            try:
                pd.tseries.frequencies.to_offset(self.resample)
            except ValueError:
                raise ConfigError(f"resample={self.resample!r} is invalid; expected a pandas frequency "
                                  "such as D, W, MS, QS, YS") from None


@dataclass(frozen=True)
class SeriesDataset(Dataset):
    """A Dataset whose rows are equally spaced in time; X holds every input column (the target's past too)."""

    dates: pd.DatetimeIndex = None
    freq: str = ""
    season: int | None = None
    season_source: str = ""  # why this season: given, the frequency's, or why there is none


def _bundled(name: str) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    import statsmodels.api as sm

    frame = getattr(sm.datasets, name).load_pandas().data
    if name == "co2":
        return frame.reset_index(drop=True), pd.DatetimeIndex(frame.index)
    if name == "macrodata":
        dates = pd.PeriodIndex.from_fields(year=frame["year"].astype(int), quarter=frame["quarter"].astype(int),
                                           freq="Q").to_timestamp()
        return frame.drop(columns=["year", "quarter"]), pd.DatetimeIndex(dates)
    dates = pd.to_datetime(frame["YEAR"].astype(int).astype(str), format="%Y")
    return frame.drop(columns=["YEAR"]), pd.DatetimeIndex(dates)


def _parse_dates(frame: pd.DataFrame, column: str | None, dataset: str) -> pd.DatetimeIndex:
    if not column:
        raise DataError(f"date_column is missing; a CSV series needs --date-column, one of: {short_list(frame.columns)}")
    if column not in frame.columns:
        raise DataError(f"date_column={column!r} is not a column of {dataset}; columns are: {short_list(frame.columns)}")
    parsed = pd.to_datetime(frame[column], errors="coerce", format="mixed")
    bad = parsed.isna()
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise DataError(f"date_column={column!r}: {int(bad.sum())} unparsable dates (first {frame[column].iloc[i]!r} "
                        f"at row {i}); expected dates such as 2024-01-31")
    return pd.DatetimeIndex(parsed)


def _infer_freq(dates: pd.DatetimeIndex) -> str | None:
    """The spacing of the dates, even with gaps: the most common frequency of short runs."""
    freq = pd.infer_freq(dates) if len(dates) >= 3 else None
    if freq:
        return freq
    guesses = [pd.infer_freq(dates[i:i + 5]) for i in range(0, max(1, len(dates) - 4), max(1, len(dates) // 50))]
    guesses = [g for g in guesses if g]
    return max(set(guesses), key=guesses.count) if guesses else None


def _equal_spacing(values: pd.DataFrame, dates: pd.DatetimeIndex, spec: SeriesSpec, where: str) -> pd.DataFrame:
    """Rows indexed by equally spaced dates, or a DataError naming the problem and the fill option."""
    values = values.set_axis(dates)
    if spec.resample:
        values = values.sort_index().resample(spec.resample).mean()
    else:
        order = dates.to_numpy()
        if len(order) > 1 and (np.diff(order) < np.timedelta64(0)).any():
            i = int(np.argmax(np.diff(order) < np.timedelta64(0))) + 1
            raise DataError(f"{where}: dates are not in increasing order (row {i}: {dates[i]} after {dates[i - 1]}); "
                            "sort the rows by date, or pass --resample FREQ")
        dup = dates.duplicated()
        if dup.any():
            raise DataError(f"{where}: {int(dup.sum())} duplicate timestamps (first {dates[dup][0]}); "
                            "keep one row per date, or pass --resample FREQ to aggregate them")
        freq = _infer_freq(dates)
        if freq is None:
            raise DataError(f"{where}: the dates are not equally spaced and no frequency could be inferred; "
                            "pass --resample FREQ (e.g. D, W, MS)")
        full = pd.date_range(dates[0], dates[-1], freq=freq)
        missing = full.difference(dates)
        if len(missing):
            if not spec.interpolate:
                raise DataError(f"{where}: {len(missing)} gaps in the dates at frequency {freq} (first missing "
                                f"{missing[0].date()}); pass --interpolate to fill them, or --resample FREQ")
            values = values.reindex(full)
        values.index.freq = pd.tseries.frequencies.to_offset(freq)
    nans = values.isna().sum()
    nans = nans[nans > 0]
    if len(nans):
        if not spec.interpolate:
            counts = ", ".join(f"{c} ({n})" for c, n in nans.items())
            raise DataError(f"{where}: missing values in columns: {counts}; pass --interpolate to fill them in time")
        values = _fill(values, split_sizes(len(values), spec)[0], where)
    return values


def _fill(values: pd.DataFrame, n_train: int, where: str) -> pd.DataFrame:
    """Missing values filled without a later part: time interpolation inside the training part (both
    directions, the training rows only), then the last observed value carried forward, so no validation or
    test value is ever filled from a row after it."""
    train = values.iloc[:n_train].interpolate(method="time", limit_direction="both")
    empty = train.columns[train.isna().all()]
    if len(empty):
        raise DataError(f"{where}: columns with no value in the training part ({n_train} rows): "
                        f"{short_list(empty)}; nothing to fill them from")
    filled = pd.concat([train, values.iloc[n_train:]]).ffill()
    filled.index.freq = values.index.freq
    return filled


def load_series(spec: SeriesSpec) -> SeriesDataset:
    """Load a bundled or CSV series, checked: numeric columns, dates equally spaced, no missing values."""
    if spec.dataset in BUNDLED_SERIES:
        frame, dates = _bundled(spec.dataset)
        target = spec.target or BUNDLED_SERIES[spec.dataset]
        name, source = spec.dataset, f"statsmodels.datasets.{spec.dataset}"
    else:
        if not os.path.isfile(spec.dataset):
            raise DataError(f"dataset={spec.dataset!r}: no such file; expected {', '.join(BUNDLED_SERIES)} "
                            "or the path of a CSV file")
        frame = read_csv(spec.dataset)
        dates = _parse_dates(frame, spec.date_column, spec.dataset)
        frame = frame.drop(columns=[spec.date_column])
        target = spec.target
        name, source = os.path.splitext(os.path.basename(spec.dataset))[0], os.path.abspath(spec.dataset)
    check_target(frame, target, spec.dataset)
    if not pd.api.types.is_numeric_dtype(frame[target]) or pd.api.types.is_bool_dtype(frame[target]):
        raise DataError(f"target={target!r} is not numeric (dtype {frame[target].dtype}); a forecast needs numbers")
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise DataError(f"non-numeric feature columns: {short_list(non_numeric)}; encode them as numbers or drop them")
    values = _equal_spacing(frame.astype("float64"), dates, spec, f"dataset={spec.dataset!r}")
    values = values.astype("float32")
    freq = values.index.freqstr or ""
    season, season_source = resolve_season(spec, freq, split_sizes(len(values), spec)[0])
    return SeriesDataset(name=name, source=source, X=values.reset_index(drop=True),
                         y=values[target].reset_index(drop=True).rename(target), task="regression", classes=None,
                         dates=pd.DatetimeIndex(values.index), freq=freq, season=season, season_source=season_source)


def frequency_season(freq: str) -> int | None:
    """The season of a regular frequency, as statsmodels' freq_to_period gives it (daily 7, business daily 5,
    weekly 52, monthly 12, quarterly 4, hourly 24; yearly 1, i.e. none); None for multiples such as 2D and
    for frequencies it does not know (minutes, seconds)."""
    from statsmodels.tsa.tsatools import freq_to_period

    try:
        offset = pd.tseries.frequencies.to_offset(freq)
        period = freq_to_period(offset) if offset.n == 1 else None
    except (ValueError, TypeError):
        period = None
    return period if period and period >= 2 else None


def resolve_season(spec: SeriesSpec, freq: str, n_train: int) -> tuple[int | None, str]:
    """(season, where it comes from). A season must fit twice in the training part (the decomposition
    and the seasonal models need two cycles): a given one that does not is an error, the frequency's
    one falls back to none (the source says so)."""
    limit = n_train // 2
    if spec.season is not None:
        if spec.season == 0:
            return None, "none (--season 0)"
        if spec.season < 2 or spec.season > limit:
            raise DataError(f"season={spec.season!r} is invalid for a training part of {n_train} rows; "
                            f"expected 0 (none) or a period from 2 to {limit} (two seasons must fit in it)")
        return spec.season, "given"
    season = frequency_season(freq)
    if season is None:
        return None, f"none (frequency {freq or 'unknown'})"
    if season > limit:
        return None, (f"none (frequency {freq} has season {season}, longer than half the training part, "
                      f"{n_train} rows)")
    return season, f"frequency {freq}"


def split_sizes(n: int, spec: SeriesSpec) -> tuple[int, int, int]:
    """(train, validation, test) row counts of the chronological split."""
    n_test = int(math.ceil(n * spec.test_fraction))
    n_val = int(math.ceil(n * spec.val_fraction))
    return n - n_val - n_test, n_val, n_test


def split_bounds(n: int, spec: SeriesSpec, longest: int | None = None) -> tuple[int, int]:
    """(end of train, end of validation): chronological, train first.

    The training part must hold one window + horizon (its windows stay inside it); validation and
    test windows take their inputs from the rows before their part, so any row count will do for them.
    """
    n_train, n_val, n_test = split_sizes(n, spec)
    need = (longest or spec.timesteps) + spec.horizon
    if n_train < need:
        raise DataError(f"the train split has {n_train} rows (of {n}), shorter than timesteps + horizon = {need}; "
                        "use a longer series, smaller timesteps or other val/test fractions")
    return n_train, n_train + n_val
