"""The data a user's own `model.fit` trained and validated on, as MLflow dataset inputs with a digest.

The digest is this module's own because MLflow's read the whole input: it hashes shapes, dtypes, column names
and at most SAMPLE evenly spaced values per array, so its cost does not grow with the rows. A `tf.data` dataset
is hashed by element spec and cardinality (same-shaped, same-size pipelines share a digest); Python generators
and keras PyDatasets get none.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd

DIGEST_TAG = "mlflow_dl.data_digest"  # the training data's digest, on every run that knows it
VALIDATION_DIGEST_TAG = "mlflow_dl.validation_digest"
SAMPLE = 20_000  # values hashed per array, evenly spaced over it
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


def _hash(md5, leaf) -> bool:
    """Feed one array-like to md5; False when it is not one (a generator, a PyDataset)."""
    if leaf is None:
        md5.update(b"none")
    elif isinstance(leaf, (pd.DataFrame, pd.Series)):
        names = list(leaf.columns) if isinstance(leaf, pd.DataFrame) else [leaf.name]
        md5.update(repr((names, [str(t) for t in np.atleast_1d(leaf.dtypes)], len(leaf))).encode())
        md5.update(pd.util.hash_pandas_object(leaf.iloc[::max(1, len(leaf) // SAMPLE)], index=False).values)
    elif _is_tf_dataset(leaf):
        md5.update(repr((leaf.element_spec, int(leaf.cardinality()))).encode())
    elif hasattr(leaf, "__array__") and hasattr(leaf, "shape"):
        array = np.asarray(leaf)
        md5.update(repr((array.shape, str(array.dtype))).encode())
        flat = array.reshape(-1)
        md5.update(pd.util.hash_array(np.ascontiguousarray(flat[::max(1, flat.size // SAMPLE)])))
    else:
        return False
    return True


def digest(data: tuple) -> str | None:
    """An 8-hex-digit digest of (x, y), the same for the same values; None when x is not hashable."""
    md5 = hashlib.md5(usedforsecurity=False)
    for name, leaf in _leaves(data):
        md5.update(name.encode())
        try:
            if not _hash(md5, leaf):
                return None
        except (TypeError, ValueError):  # an array-like numpy or pandas cannot hash (ragged, odd dtypes)
            return None
    return md5.hexdigest()[:8]


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
    """{"training": digest, "validation": digest} of what fit gets, each when it can be hashed."""
    out = {}
    for context, data in parts(arguments).items():
        if (d := digest(data)) is not None:
            out[context] = d
    return out


def datasets(arguments: dict, digests_: dict[str, str], source_tags: dict[str, str]) -> list[tuple]:
    """[(mlflow dataset, context)] for each part with a digest; named after its context."""
    from mlflow.data.code_dataset_source import CodeDatasetSource

    source = CodeDatasetSource(tags=source_tags)
    return [(mlflow_dataset(data, digests_[context], context, source), context)
            for context, data in parts(arguments).items() if context in digests_]
