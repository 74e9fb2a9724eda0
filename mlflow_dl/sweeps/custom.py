"""`sweep_model`: a sweep of the user's own model, without keras-tuner's vocabulary.

The data becomes what every family reads (a CSV or a bundled data set, split and
scaled by the runner), so the sweep is the runner's (`families.custom`): the same
parent and children, figures, `--workers` and Ray executors, promotion and serving.
"""

from __future__ import annotations

import os
import tempfile

from mlflow_dl.config import DataSpec, FitSpec
from mlflow_dl.errors import ConfigError
from mlflow_dl.families import custom

FRAME_NAME = "dataframe"  # the data set's name in MLflow when rows are given in memory


def _is_tf_data(value) -> bool:
    return type(value).__module__.startswith("tensorflow") and hasattr(value, "element_spec")


def _frame(data, target: str | None):
    """(DataFrame, target column) of in-memory data; (None, None) for a CSV path or bundled name."""
    import numpy as np
    import pandas as pd

    if isinstance(data, (str, os.PathLike)):
        return None, None
    if isinstance(data, pd.DataFrame):
        if not target or target not in data.columns:
            raise ConfigError(f"target={target!r} is not a column of the DataFrame; expected one of: "
                              f"{', '.join(map(str, data.columns[:20]))}")
        return data, target
    if _is_tf_data(data):
        data = _tf_data_rows(data)
        if isinstance(data[0], pd.DataFrame):
            return data
    if isinstance(data, tuple) and len(data) == 2 and any(_is_tf_data(d) for d in data):
        raise ConfigError("data=(train, val) of two tf.data.Datasets is not supported by sweep_model (it splits and "
                          "scales the rows itself); expected one tf.data.Dataset of (features, target), arrays (x, y), "
                          "a DataFrame with target=, or a CSV path; or run a keras-tuner GridSearch under "
                          "mlflow_dl.autolog() on the two Datasets")
    if isinstance(data, tuple) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if x.ndim != 2 or len(x) != len(y) or y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
            raise ConfigError(f"data=(x, y) has shapes {x.shape} and {y.shape}; expected x of (rows, features) "
                              "and y of (rows,) with as many rows")
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]).assign(y=y.reshape(len(y)))
        return frame, "y"
    raise ConfigError(f"data of type {type(data).__name__} is not supported; expected arrays (x, y), a DataFrame "
                      "with target=, a tf.data.Dataset of (features, target), or a CSV path")


def _tf_data_rows(dataset):
    """The rows of a tf.data.Dataset of (features, target) elements, batched or not: arrays (x, y), or
    (DataFrame, target column) when the features are a dict of columns, as `from_tensor_slices((dict(df), y))`."""
    import numpy as np
    import pandas as pd

    spec = dataset.element_spec
    features = spec[0] if isinstance(spec, tuple) and len(spec) == 2 else None
    columns = isinstance(features, dict)
    ranks = {s.shape.rank if hasattr(s, "shape") else None for s in (features.values() if columns else [features])}
    row_rank = 0 if columns else 1  # of one row's feature(s)
    if features is None or len(ranks) != 1 or ranks.pop() not in (row_rank, row_rank + 1):
        raise ConfigError(f"data is a tf.data.Dataset of {spec}; expected (features, target) elements of a table: "
                          "features of shape (features,) or a dict of columns, batched or not")
    first = next(iter(features.values())) if columns else features
    if first.shape.rank == row_rank + 1:  # batched
        dataset = dataset.unbatch()
    xs, ys = zip(*dataset.as_numpy_iterator())
    y = np.asarray(ys).reshape(len(ys), -1)
    if not columns:
        return np.stack(xs), y
    target = "y" if "y" not in features else "target"
    return pd.DataFrame({str(k): [row[k] for row in xs] for k in features}).assign(**{target: y[:, 0]}), target


def sweep_model(build, grid, data, target: str | None = None, *, epochs: int = 20, batch_size: int = 32,
                patience: int | None = None, task: str = "auto", scaler: str = "minmax", seed: int = 42,
                workers: int = 1, executor: str | None = None, ray_address: str = "auto",
                experiment: str | None = None, progress: bool = True, echo=None):
    """Fit `build(**point)` (a compiled keras.Model) at every point of `grid` (a dict of lists, crossed).

    `build` is a function or its name `package.module:function`; worker processes
    (`workers` > 1) and Ray import it by name, so a function defined in a notebook or
    `__main__` runs inline only. `data`: arrays (x, y), a DataFrame with the `target`
    column, a tf.data.Dataset of (features, target) rows (read into memory once), or a
    CSV path (or bundled data set name). The features reach the model
    scaled (`scaler`, fitted on the training rows); the served model takes raw rows.
    Returns the runner's SweepResult (parent run, results table, best run).
    """
    from mlflow_dl.sweeps.runner import sweep

    ref = _by_name(build)
    if not isinstance(ref, str) and (workers > 1 or executor in ("processes", "ray")):
        raise ConfigError(f"model={getattr(build, '__qualname__', build)!r} cannot be imported by name (defined in "
                          "__main__ or a notebook); expected workers=1, or a function in a module "
                          "(package.module:function)")
    frame, column = _frame(data, target)
    if frame is not None and executor == "ray":
        raise ConfigError("executor='ray' needs data as a CSV path every Ray worker can read; "
                          "expected data='path/to/train.csv' with target=")
    fit = FitSpec(epochs=epochs, batch_size=batch_size, patience=patience, seed=seed)
    with tempfile.TemporaryDirectory(prefix="mlflow-dl-data-") as tmp:
        if frame is not None:  # in-memory rows: a CSV for the runner and its worker processes
            path = os.path.join(tmp, f"{FRAME_NAME}.csv")
            frame.to_csv(path, index=False)
            data, target = path, column
        spec = DataSpec(dataset=str(data), target=target, task=task, scaler=scaler, seed=seed)
        return sweep("custom", data=spec, fit=fit, workers=workers, executor=executor, ray_address=ray_address,
                     experiment=experiment, progress=progress, echo=echo, build=ref, grid=grid)


def _by_name(build):
    """`package.module:function` for a function importable by that name; else the function itself."""
    if isinstance(build, str):
        return build
    module, name = getattr(build, "__module__", None), getattr(build, "__qualname__", "")
    if module and module != "__main__" and "<" not in name:
        ref = f"{module}:{name}"
        try:
            if custom.resolve(ref) is build:
                return ref
        except ConfigError:
            pass
    return build
