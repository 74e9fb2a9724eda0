"""Your own model: a function of keyword values returning a compiled keras.Model, over a crossed grid.

The function is named `package.module:function` or `path/to/file.py:function` so worker processes and Ray
tasks can import it. Each grid point is a child run fitted by `training.trial.run_trial` on the scaled splits;
the served model takes raw rows because it carries the scaler.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import itertools
import os
import sys
import tempfile
from dataclasses import replace
from functools import partial

from mlflow_dl.config import DataSpec, FitSpec, TrialSpec
from mlflow_dl.errors import ConfigError
from mlflow_dl.runtime import trial_state
from mlflow_dl.sweeps.trial_specs import Axis, Trial

QUESTION = "Which values of your own model's arguments are best?"
AXIS = Axis(key=None, label="trial")
EXPECTED_REF = "package.module:function (importable from the working directory) or path/to/file.py:function"


def resolve(ref):
    """The function `ref` names (or `ref` itself when it is one); a one-line ConfigError otherwise."""
    if callable(ref):
        return ref
    text = str(ref or "")
    module_name, _, name = text.rpartition(":")
    if not module_name or not name:
        raise ConfigError(f"model={text!r} is invalid; expected {EXPECTED_REF}")
    try:
        if module_name.endswith(".py"):
            module = _from_file(module_name)
        else:
            with _working_folder_importable():
                module = importlib.import_module(module_name)
        fn = getattr(module, name)
    except Exception as exc:  # noqa: BLE001 - whatever the user's module raises, said in one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"model={text!r} does not import ({type(exc).__name__}: {reason}); "
                          f"expected {EXPECTED_REF}") from None
    if not callable(fn):
        raise ConfigError(f"model={text!r} is a {type(fn).__name__}, not a function; expected {EXPECTED_REF}")
    return fn


@contextlib.contextmanager
def _working_folder_importable():
    """The working folder on sys.path for the block (where `package.module` is looked up), then sys.path
    as it was: a user's process keeps its own import path."""
    folder = os.getcwd()
    added = folder not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _from_file(path: str):
    path = os.path.abspath(path)
    name = f"mlflow_dl_user_{os.path.splitext(os.path.basename(path))[0]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _cast(text: str):
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_grid(grid) -> dict[str, list]:
    """A dict of lists (a scalar is a list of one), or the text `key=v1,v2;key2=v3`."""
    if isinstance(grid, str):
        out = {}
        for part in filter(None, (p.strip() for p in grid.split(";"))):
            key, sep, values = part.partition("=")
            if not sep or not key.strip() or not values.strip():
                raise ConfigError(f"grid={grid!r} is invalid at {part!r}; expected key=v1,v2;key2=v3 "
                                  "(e.g. dropout=0,0.2;l2=0.001,0.01)")
            out[key.strip()] = [_cast(v) for v in values.split(",")]
        grid = out
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"grid={grid!r} is empty or not a mapping; expected a dict of lists such as "
                          "{'dropout': [0, 0.2]} or the text dropout=0,0.2;l2=0.001,0.01")
    return {str(k): list(v) if isinstance(v, (list, tuple, range)) else [v] for k, v in grid.items()}


def points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values (the grid crossed)."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def check(fn, ref, grid: dict[str, list]) -> None:
    """The grid's keys are arguments of `fn`, and its first point builds a compiled keras.Model."""
    label = ref if isinstance(ref, str) else getattr(fn, "__qualname__", repr(fn))
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [k for k in grid if k not in accepted]
        if unknown:
            raise ConfigError(f"grid key(s) {', '.join(unknown)} are not arguments of model={label!r}; "
                              f"it accepts: {', '.join(accepted) or 'none'}")
    if any(not values for values in grid.values()):
        raise ConfigError(f"grid={grid!r} has a key without values; expected one or more values per key")
    first = points(grid)[0]
    with trial_state.kept():  # a user's process: its random streams and Keras session as they were
        model = _build(fn, label, first)
    import keras

    if not isinstance(model, keras.Model):
        raise ConfigError(f"model={label!r} returned {type(model).__name__} for {first}; "
                          "expected a compiled keras.Model")
    if not getattr(model, "compiled", getattr(model, "optimizer", None) is not None):
        raise ConfigError(f"model={label!r} returned a keras.Model that is not compiled for {first}; "
                          "expected the function to call model.compile(...)")


def _build(fn, label, values: dict):
    try:
        return fn(**values)
    except Exception as exc:  # noqa: BLE001 - the user's function: one line, before any run
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model={label!r} fails for {values} ({type(exc).__name__}: {reason}); "
                          "expected a function of the grid's keys returning a compiled keras.Model") from None


def build_user_model(ref, values: dict, spec: TrialSpec, splits):
    """Trial.build_model: the user's function at this grid point (imported by name in a worker; the
    working folder importable while it builds, as when it was imported)."""
    fn = resolve(ref)
    with _working_folder_importable():
        return fn(**values)


def _name(values: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def trials(base: TrialSpec, build=None, grid=None) -> list[Trial]:
    """A trial per grid point; the function (`build`), its arguments and one build are checked first."""
    if build is None:
        raise ConfigError(f"model is missing; expected {EXPECTED_REF}")
    grid = parse_grid(grid)  # before the import: the user's module loads Keras
    fn = resolve(build)
    check(fn, build, grid)
    spec = replace(base, model=None)  # the user's function is the model: no MLP settings to log
    return [Trial(name=_name(values), spec=spec, values=values, build_model=partial(build_user_model, build, values))
            for values in points(grid)]


def parent_params(base: TrialSpec) -> dict[str, str]:
    """The parent's params: data and fit (the model is the user's function, logged as sweep.build)."""
    return replace(base, model=None).params()


def log_comparison(table, histories) -> None:
    """Validation loss against each numeric grid key, on the parent."""
    import mlflow

    from mlflow_dl.sweeps.compare import value_figures
    from mlflow_dl.fit import plots

    keys = [k for k in table.columns if k not in ("trial", "status", "error", "run_id")
            and not k.startswith(("best_", "test_", "train_")) and k not in ("total_params", "fit_seconds")]
    for artifact, fig in value_figures(table[table["status"] == "FINISHED"], keys).items():
        mlflow.log_figure(fig, artifact)
        plots.close(fig)


# -- sweep_model: the same from Python, with the data in memory ------------------------
FRAME_NAME = "dataframe"  # the data set's name in MLflow when rows are given in memory


def _is_tf_data(value) -> bool:
    return type(value).__module__.startswith("tensorflow") and hasattr(value, "element_spec")


def frame_of(data, target: str | None):
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
                experiment: str | None = None, progress: bool = True, echo=None, prune=None):
    """Fit `build(**point)` (a compiled keras.Model) at every point of `grid` (a dict of lists, crossed).

    `build`: a function or its name `package.module:function`; workers > 1 and Ray import it by name, so a
    function defined in a notebook or `__main__` runs inline only. `data`: arrays (x, y), a DataFrame with the
    `target` column, a tf.data.Dataset of (features, target) rows, or a CSV path (or bundled data set name).
    `scaler` is fitted on the training rows; the served model takes raw rows. `prune`: True (or a
    mlflow_dl.training.pruning.PruneSpec) stops losing trials early. Returns the runner's SweepResult.
    """
    from mlflow_dl.sweeps.runner import sweep

    ref = _by_name(build)
    if not isinstance(ref, str) and (workers > 1 or executor in ("processes", "ray")):
        raise ConfigError(f"model={getattr(build, '__qualname__', build)!r} cannot be imported by name (defined in "
                          "__main__ or a notebook); expected workers=1, or a function in a module "
                          "(package.module:function)")
    frame, column = frame_of(data, target)
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
        return sweep(sys.modules[__name__], data=spec, fit=fit, workers=workers, executor=executor,
                     ray_address=ray_address, prune=prune,
                     experiment=experiment, progress=progress, echo=echo, build=ref, grid=grid)


def _by_name(build):
    """`package.module:function` for a function importable by that name; else the function itself."""
    if isinstance(build, str):
        return build
    module, name = getattr(build, "__module__", None), getattr(build, "__qualname__", "")
    if module and module != "__main__" and "<" not in name:
        ref = f"{module}:{name}"
        try:
            if resolve(ref) is build:
                return ref
        except ConfigError:
            pass
    return build
