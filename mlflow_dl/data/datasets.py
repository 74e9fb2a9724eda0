"""Bundled data sets (shipped inside scikit-learn) and user CSVs, validated."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlflow_dl.config import BUNDLED_DATASETS
from mlflow_dl.errors import DataError

MAX_CLASSES_FOR_AUTO = 20


@dataclass(frozen=True)
class Dataset:
    """Feature frame with the original column names, a target, and its task."""

    name: str
    source: str
    X: pd.DataFrame
    y: pd.Series
    task: str  # binary | multiclass | regression
    classes: tuple | None  # the original labels, index = encoded class

    @property
    def frame(self) -> pd.DataFrame:
        return self.X.assign(**{self.y.name: self.y})


def _bundled(name: str) -> tuple[pd.DataFrame, str, str]:
    from sklearn import datasets

    loader = {
        "breast_cancer": (datasets.load_breast_cancer, "binary"),
        "diabetes": (datasets.load_diabetes, "regression"),
        "digits": (datasets.load_digits, "multiclass"),
    }[name]
    bunch = loader[0](as_frame=True)
    return bunch.frame, "target", loader[1]


def read_csv(path: str) -> pd.DataFrame:
    """A user's CSV, or a one-line DataError saying why it cannot be read."""
    if not os.path.isfile(path):
        raise DataError(
            f"dataset={path!r}: no such file; expected a bundled name "
            f"({', '.join(BUNDLED_DATASETS)}) or the path of a CSV file"
        )
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"dataset={path!r} is not a readable CSV: {first}") from None


def _infer_task(y: pd.Series) -> str:
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "binary" if y.nunique() == 2 else "multiclass"
    values = y.to_numpy(dtype=float)
    integral = np.all(np.isfinite(values)) and np.all(values == np.round(values))
    if integral and y.nunique() <= MAX_CLASSES_FOR_AUTO:
        return "binary" if y.nunique() == 2 else "multiclass"
    return "regression"


def short_list(names, limit: int = 8) -> str:
    """Column names for an error line: the first `limit`, then how many in all."""
    names = [str(n) for n in names]
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def check_target(frame: pd.DataFrame, target: str | None, dataset: str) -> None:
    """A one-line DataError when a CSV names no target, or one that is not among its columns."""
    if not target:
        raise DataError(f"target is missing; a CSV needs --target, one of: {short_list(frame.columns)}")
    if target not in frame.columns:
        raise DataError(f"target={target!r} is not a column of {dataset}; columns are: {short_list(frame.columns)}")


def load_dataset(dataset: str, target: str | None = None, task: str = "auto", dropna: bool = False) -> Dataset:
    """Load a bundled data set or a CSV and check it is ready for a Keras MLP.

    Every problem is a DataError naming the column(s) at fault.
    """
    if dataset in BUNDLED_DATASETS:
        frame, default_target, bundled_task = _bundled(dataset)
        target = target or default_target
        task = bundled_task if task == "auto" else task
        source = f"sklearn.datasets.load_{dataset}"
        name = dataset
    else:
        frame = read_csv(dataset)
        source = os.path.abspath(dataset)
        name = os.path.splitext(os.path.basename(dataset))[0]
    check_target(frame, target, dataset)

    nans = frame.isna().sum()
    nans = nans[nans > 0]
    if len(nans):
        if not dropna:
            counts = ", ".join(f"{col} ({n})" for col, n in nans.items())
            raise DataError(f"missing values in columns: {counts}; clean the data or pass --dropna to drop those rows")
        frame = frame.dropna().reset_index(drop=True)

    y = frame[target]
    X = frame.drop(columns=[target])
    non_numeric = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c])]
    if non_numeric:
        raise DataError(f"non-numeric feature columns: {short_list(non_numeric)}; encode them as numbers or drop them")
    if X.shape[1] == 0:
        raise DataError(f"dataset={dataset!r} has no feature columns besides target={target!r}")
    X = X.astype("float32")

    task = _infer_task(y) if task == "auto" else task
    classes = None
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y):
            raise DataError(f"target={target!r} is not numeric, so task=regression cannot use it")
        y = y.astype("float32")
    else:
        codes, uniques = pd.factorize(y, sort=True)
        classes = tuple(u.item() if hasattr(u, "item") else u for u in uniques)
        if len(classes) < 2:
            raise DataError(f"target={target!r} has a single class {classes!r}; classification needs two or more")
        if task == "binary" and len(classes) != 2:
            raise DataError(f"task=binary but target={target!r} has {len(classes)} classes; use task=multiclass")
        y = pd.Series(codes.astype("int64"), name=target)
    return Dataset(name=name, source=source, X=X, y=y.rename(target), task=task, classes=classes)
