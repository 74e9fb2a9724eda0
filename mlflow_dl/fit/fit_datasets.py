"""The data a user's own `model.fit` trained and validated on, as MLflow dataset inputs with a digest.

In-memory data (numpy arrays, DataFrames, tensors) is hashed over all its bytes with blake2b, at memory
speed (bench/RESULTS.md has the cost against a fit), so data differing in one value gets another digest.
What is not in memory (a `tf.data` pipeline, a Python generator, a keras PyDataset) cannot be read without
consuming it: its digest is marked `unhashed:` and covers only what can be told without reading it (element
spec and size, or the kind of object), so that other data of the same shapes shares it.
"""

from __future__ import annotations

import hashlib
import math
import sys

import numpy as np
import pandas as pd

DIGEST_TAG = "mlflow_dl.data_digest"  # the training data's digest, on every run that knows it
VALIDATION_DIGEST_TAG = "mlflow_dl.validation_digest"
SOURCE_TAGS = ("mlflow.source.name", "mlflow.source.type", "mlflow.user")  # a dataset's source: the run's code
UNHASHED = "unhashed:"  # a digest that does not cover the contents
CONTEXTS = ("training", "validation")


def _is_tf_dataset(x) -> bool:
    return type(x).__module__.startswith("tensorflow") and hasattr(x, "element_spec")


def rows(x) -> int | None:
    """How many rows (samples) x holds: its first dimension, or None when it has none (a dataset)."""
    if isinstance(x, dict):
        x = next(iter(x.values()), None)
    elif isinstance(x, (list, tuple)) and x:
        x = x[0]
    shape = getattr(x, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) and shape[0] is not None else None


def _cut(x, start: int, stop: int):
    if x is None:
        return None
    if isinstance(x, dict):
        return {k: _cut(v, start, stop) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_cut(v, start, stop) for v in x)
    if isinstance(x, (pd.DataFrame, pd.Series)):
        return x.iloc[start:stop]
    return x[start:stop]


def _unpack(data):
    """validation_data as (x, y): a tuple (x, y[, sample_weight]) or one dataset yielding both."""
    if isinstance(data, tuple) and len(data) in (2, 3):
        return data[0], data[1]
    return data, None


def parts(arguments: dict) -> dict[str, tuple]:
    """{"training": (x, y), "validation": (x, y)} from fit's arguments (fit_params.bind_fit or
    arguments_in_fit); "validation" only when fit validates."""
    x, y = arguments.get("x"), arguments.get("y")
    out = {"training": (x, y)}
    validation, split = arguments.get("validation_data"), arguments.get("validation_split") or 0.0
    if validation is not None:
        out["validation"] = _unpack(validation)
    elif split and (n := rows(x)) is not None:
        at = int(math.floor(n * (1.0 - split)))
        out["training"], out["validation"] = (_cut(x, 0, at), _cut(y, 0, at)), (_cut(x, at, n), _cut(y, at, n))
    return out


def _leaves(x, name: str = ""):
    """(name, array-like) for every array in x: dict entries by sorted key, list entries by place."""
    if isinstance(x, dict):
        for k in sorted(x, key=str):
            yield from _leaves(x[k], f"{name}/{k}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from _leaves(v, f"{name}/{i}")
    else:
        yield name, x


def _bytes(h, array: np.ndarray) -> None:
    """Every value of a numpy array: its raw bytes, or (objects: strings, mixed) pandas' per-value hashes."""
    if array.dtype.kind in "biufcmMV":
        h.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    else:
        h.update(pd.util.hash_array(np.asarray(array, dtype=object).reshape(-1)).view(np.uint8))


def _hash(h, leaf) -> str | None:
    """Feed one array-like to h; None when all its values were, else what stood in for them."""
    if leaf is None:
        h.update(b"none")
    elif isinstance(leaf, (pd.DataFrame, pd.Series)):
        frame = leaf.to_frame() if isinstance(leaf, pd.Series) else leaf
        h.update(repr((list(map(str, frame.columns)), [str(t) for t in frame.dtypes], frame.shape)).encode())
        for _, column in frame.items():
            if isinstance(column.dtype, np.dtype):
                _bytes(h, column.to_numpy())
            else:  # pandas' own dtypes (categorical, nullable integers, Arrow strings)
                h.update(pd.util.hash_pandas_object(column, index=False).to_numpy().view(np.uint8))
    elif _is_tf_dataset(leaf):
        h.update(repr((leaf.element_spec, int(leaf.cardinality()))).encode())
        return "tf.data pipeline"
    elif hasattr(leaf, "__array__") and hasattr(leaf, "shape"):
        array = np.asarray(leaf)
        h.update(repr((array.shape, str(array.dtype))).encode())
        _bytes(h, array)
    else:
        h.update(f"{type(leaf).__module__}.{type(leaf).__qualname__}".encode())
        return type(leaf).__name__
    return None


def digest(data: tuple) -> str:
    """A 16-hex-digit digest of (x, y), the same for the same values; prefixed UNHASHED when part of
    it is not in memory (a tf.data pipeline, a generator), whose contents it then does not cover."""
    h = hashlib.blake2b(digest_size=8)
    unhashed = False
    for name, leaf in _leaves(data):
        h.update(name.encode())
        try:
            unhashed = _hash(h, leaf) is not None or unhashed
        except (TypeError, ValueError):  # an array-like numpy or pandas cannot read (ragged, odd dtypes)
            h.update(type(leaf).__name__.encode())
            unhashed = True
    return (UNHASHED if unhashed else "") + h.hexdigest()


def hashed(digest_: str | None) -> bool:
    """Whether a digest covers the data's contents (not UNHASHED)."""
    return bool(digest_) and not str(digest_).startswith(UNHASHED)


def _numpy(x):
    if isinstance(x, dict):
        return {str(k): np.asarray(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return {f"input_{i}": np.asarray(v) for i, v in enumerate(x)}
    return np.asarray(x)


def mlflow_dataset(data: tuple, digest_: str, name: str, source):
    """(x, y) as an mlflow.data dataset: from_pandas, from_tensorflow or from_numpy."""
    import mlflow.data

    x, y = data
    if _is_tf_dataset(x):
        from mlflow.data.tensorflow_dataset import from_tensorflow

        return from_tensorflow(x, source=source, name=name, digest=digest_)
    if isinstance(x, pd.DataFrame) and (y is None or isinstance(y, (pd.Series, np.ndarray))):
        target = None
        if y is not None:
            target = str(getattr(y, "name", None) or "target")
            target = target if target not in x.columns else f"{target}_y"
            x = x.assign(**{target: np.asarray(y)})
        return mlflow.data.from_pandas(x, source=source, targets=target, name=name, digest=digest_)
    return mlflow.data.from_numpy(_numpy(x), source=source, targets=None if y is None else _numpy(y), name=name,
                                  digest=digest_)


def digests(arguments: dict) -> dict[str, str]:
    """{"training": digest, "validation": digest} of what fit gets (training first)."""
    return {context: digest(data) for context, data in parts(arguments).items()}


def datasets(arguments: dict, digests_: dict[str, str], source_tags: dict[str, str]) -> list[tuple]:
    """[(mlflow dataset, context)] for each part MLflow can describe (in memory, or a tf.data pipeline;
    not a generator); named after its context."""
    from mlflow.data.code_dataset_source import CodeDatasetSource

    source = CodeDatasetSource(tags=source_tags)
    return [(mlflow_dataset(data, digests_[context], context, source), context)
            for context, data in parts(arguments).items()
            if context in digests_ and (hashed(digests_[context]) or _is_tf_dataset(data[0]))]


def log_datasets(run_id: str, arguments: dict, digests_: dict[str, str], run_tags: dict[str, str]) -> None:
    """Training and validation data as the run's dataset inputs, their source the run's code (its source
    tags); a failure is one line, never the fit's."""
    from mlflow_dl.delivery import runs

    source = {k: v for k, v in run_tags.items() if k in SOURCE_TAGS}
    try:
        for dataset, context in datasets(arguments, digests_, source):
            runs.log_dataset(dataset, context, run_id=run_id)
    except Exception as exc:  # an input mlflow.data cannot describe: the digests are tagged anyway
        print(f"mlflow-dl: datasets not logged: {type(exc).__name__}: {exc}", file=sys.stderr)
