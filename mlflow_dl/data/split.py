"""Train / validation / test split with a fixed seed; scalers fitted on train only."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mlflow_dl.config import DataSpec
from mlflow_dl.data.datasets import Dataset
from mlflow_dl.data.preprocessing import Preprocessing
from mlflow_dl.errors import DataError

MIN_ROWS = {"train": 2, "validation": 1, "test": 1}


@dataclass(frozen=True)
class Splits:
    """Scaled arrays for Keras, the preprocessing that made them, and the raw test rows."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    preprocessing: Preprocessing
    raw_test: "object"  # pandas DataFrame of the test rows as a user would send them
    y_test_original: np.ndarray

    @property
    def n_classes(self) -> int:
        return len(self.preprocessing.classes or ())


def affine(scaler) -> tuple[np.ndarray, np.ndarray]:
    """Any fitted sklearn scaler of the form x * a + b, as (a, b)."""
    if hasattr(scaler, "min_"):  # MinMaxScaler
        return scaler.scale_, scaler.min_
    scale = np.where(scaler.scale_ == 0, 1.0, scaler.scale_)  # StandardScaler
    return 1.0 / scale, -scaler.mean_ / scale


def split_and_scale(ds: Dataset, spec: DataSpec) -> Splits:
    """Split rows (stratified for classification), then fit scalers on the training part only."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    n = len(ds.X)
    n_test = int(np.ceil(n * spec.test_fraction))
    n_val = int(np.ceil(n * spec.val_fraction))
    sizes = {"train": n - n_test - n_val, "validation": n_val, "test": n_test}
    short = [k for k, v in sizes.items() if v < MIN_ROWS[k]]
    if short:
        raise DataError(
            f"{ds.name} has {n} rows, too few for the split "
            f"(val_fraction={spec.val_fraction}, test_fraction={spec.test_fraction}); "
            f"the {short[0]} part would get {sizes[short[0]]} rows, it needs at least {MIN_ROWS[short[0]]}"
        )

    def _split(idx, size):
        strat = ds.y.to_numpy()[idx] if ds.task != "regression" else None
        try:
            return train_test_split(idx, test_size=size, random_state=spec.seed, stratify=strat)
        except ValueError:  # a class too small to stratify: fall back to a plain shuffle
            return train_test_split(idx, test_size=size, random_state=spec.seed)

    rest, test = _split(np.arange(n), n_test)
    train, val = _split(rest, n_val)

    x_scaler = (MinMaxScaler() if spec.scaler == "minmax" else StandardScaler()).fit(ds.X.iloc[train])
    a, b = affine(x_scaler)
    y = ds.y.to_numpy()
    y_scale, y_offset = 1.0, 0.0
    if ds.task == "regression" and spec.scale_y:
        y_scaler = StandardScaler().fit(y[train].reshape(-1, 1))
        y_scale, y_offset = float(y_scaler.scale_[0]), float(y_scaler.mean_[0])
    prep = Preprocessing(
        columns=tuple(map(str, ds.X.columns)),
        x_scale=tuple(map(float, a)),
        x_offset=tuple(map(float, b)),
        task=ds.task,
        target=str(ds.y.name),
        classes=ds.classes,
        y_scale=y_scale,
        y_offset=y_offset,
    )

    def xs(idx):
        return prep.transform(ds.X.iloc[idx])

    def ys(idx):
        if ds.task != "regression":
            return y[idx]
        return ((y[idx] - y_offset) / y_scale).astype(np.float32)

    return Splits(
        x_train=xs(train), y_train=ys(train),
        x_val=xs(val), y_val=ys(val),
        x_test=xs(test), y_test=ys(test),
        preprocessing=prep,
        raw_test=ds.X.iloc[test].reset_index(drop=True),
        y_test_original=y[test],
    )


def subsample_train(splits: Splits, fraction: float, seed: int) -> Splits:
    """Keep `fraction` of the training rows (validation and test untouched): the data-size curve."""
    if fraction >= 1:
        return splits
    n = len(splits.x_train)
    keep = np.sort(np.random.default_rng(seed).permutation(n)[: max(MIN_ROWS["train"], int(round(n * fraction)))])
    return replace(splits, x_train=splits.x_train[keep], y_train=splits.y_train[keep])
