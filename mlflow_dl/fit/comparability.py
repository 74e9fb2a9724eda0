"""Which runs may be ranked together: the comparability key, a tag on every run.

Validation losses compare only on the same data (digest, not name), target, task, loss, target scaling and
split, and for a series horizon; the window length is left out, as sweeps compare it on the same target rows.
The key is a short hash of those parts, which are tagged beside it.
"""

from __future__ import annotations

import hashlib

from mlflow_dl.tags import DATASET_TAG, KEY_TAG, PART_PREFIX

PARTS = ("digest", "target", "task", "loss", "scale_y", "split", "horizon")  # what the key hashes


def validation_rule(arguments: dict | None) -> str:
    """How a user's fit chose its validation rows (the key's `split` for a fit the callback keys)."""
    arguments = arguments or {}
    if arguments.get("validation_data") is not None:
        return "validation_data"
    return f"validation_split={arguments.get('validation_split') or 0.0:g}"


def key(digest: str, target: str, task: str, loss: str, scale_y: bool = False, split: str = "",
        horizon: int | None = None) -> str:
    """12 hex characters naming what a run's val_loss measures (see the module docstring).

    `digest`: the data set's MLflow digest (of every input it was fitted and validated
    on, e.g. "abc,def" sorted); `split`: how validation rows were chosen, any stable text.
    """
    values = dict(digest=digest, target=target, task=task, loss=loss, scale_y=scale_y, split=split, horizon=horizon)
    text = "|".join(f"{name}={values[name]}" for name in PARTS)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def tags(dataset: str, digest: str, target: str, task: str, loss: str, scale_y: bool = False, split: str = "",
         horizon: int | None = None) -> dict[str, str]:
    """The key tag and one readable tag per part (`dataset`: the data set's name, shown, not hashed)."""
    parts = dict(digest=digest, target=target, task=task, loss=loss, scale_y=scale_y, split=split, horizon=horizon)
    out = {KEY_TAG: key(**parts), DATASET_TAG: str(dataset)[:250]}
    out.update({PART_PREFIX + name: str(value)[:250] for name, value in parts.items() if value is not None})
    return out


def split_text(seed: int, val_fraction: float, test_fraction: float, chronological: bool = False) -> str:
    """How validation and test rows are chosen: a chronological split ignores the seed."""
    if chronological:
        return f"chronological val={val_fraction:g} test={test_fraction:g}"
    return f"random seed={seed} val={val_fraction:g} test={test_fraction:g}"


def loss_name(model) -> str:
    """The compiled loss of a Keras model as text ('binary_crossentropy', 'mse', a class or function name)."""
    loss = getattr(model, "loss", None)
    if isinstance(loss, str) or loss is None:
        return str(loss)
    if isinstance(loss, (list, tuple, dict)):
        items = loss.items() if isinstance(loss, dict) else enumerate(loss)
        return ",".join(f"{k}:{_one(v)}" for k, v in items)
    return _one(loss)


def _one(loss) -> str:
    if isinstance(loss, str):
        return loss
    return getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__


def fit_tags(model, dataset: str, digests, validation: str) -> dict[str, str]:
    """The key of a user's own `model.fit` (autolog): the digests of its inputs with their roles
    (`digests`: {"training": ..., "validation": ...}, or the two in that order), the model's
    compiled loss, and how validation rows were chosen (`validation`: e.g. "validation_split=0.2" or
    "validation_data"). Target and task are what the digests and the loss already pin down. A digest
    of data not in memory (fit_datasets.UNHASHED) stays visible in the key's digest part, where
    promotion reads it."""
    roles = dict(digests) if isinstance(digests, dict) else dict(zip(("training", "validation"), digests))
    return tags(dataset=dataset, digest=",".join(f"{role}={d}" for role, d in roles.items()), target="fit",
                task="fit", loss=loss_name(model), split=validation)

