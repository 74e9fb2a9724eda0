"""The comparability key: what changes it and what does not."""

import keras
import numpy as np
import pandas as pd

from mlflow_dl.fit import comparability as c
from mlflow_dl.fit import fit_datasets
from mlflow_dl.tags import DATASET_TAG, KEY_TAG

BASE = dict(digest="abc", target="y", task="regression", loss="mse", scale_y=False,
            split=c.split_text(42, 0.2, 0.2), horizon=None)


def test_every_part_changes_the_key_and_the_name_does_not():
    k = c.key(**BASE)
    assert len(k) == 12 and c.key(**BASE) == k
    for part, other in dict(digest="abd", target="z", task="binary", loss="mae", scale_y=True,
                            split=c.split_text(7, 0.2, 0.2), horizon=3).items():
        assert c.key(**{**BASE, part: other}) != k, part
    assert c.tags("a", **BASE)[KEY_TAG] == c.tags("renamed", **BASE)[KEY_TAG] == k
    assert c.tags("a", **BASE)[DATASET_TAG] == "a"


def test_a_chronological_split_ignores_the_seed_and_the_window_is_no_part():
    assert c.split_text(1, 0.15, 0.15, chronological=True) == c.split_text(2, 0.15, 0.15, chronological=True)
    assert "timesteps" not in c.PARTS and "window" not in c.PARTS


def test_fit_tags_of_a_users_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("adam", keras.losses.Huber())
    tags = c.fit_tags(model, "xs", ["d2", "d1"], "validation_split=0.2")
    assert tags["mlflow_dl.comparability.loss"] == "huber_loss"
    assert tags["mlflow_dl.comparability.digest"] == "training=d2,validation=d1"
    assert tags[KEY_TAG] == c.fit_tags(model, "xs", {"training": "d2", "validation": "d1"},
                                         "validation_split=0.2")[KEY_TAG]
    assert tags[KEY_TAG] != c.fit_tags(model, "xs", ["d2", "d1"], "validation_data")[KEY_TAG]


def fit_key(x, y, validation):
    """The key autolog gives `model.fit(x, y, validation_data=validation)`."""
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    digests = fit_datasets.digests({"x": x, "y": y, "validation_data": validation})
    return c.fit_tags(model, "fit", list(digests.values()), "validation_data")[KEY_TAG]


def test_arrays_differing_only_in_their_last_value_get_two_keys():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(25_000, 4)), rng.normal(size=25_000)  # 100,000 values: more than any sample
    val = (x[:100], y[:100])
    changed = x.copy()
    changed[-1, -1] += 1e-9
    assert fit_datasets.digest((changed, y)) != fit_datasets.digest((x, y))
    assert fit_key(changed, y, val) != fit_key(x, y, val) == fit_key(x.copy(), y.copy(), val)
    frame = pd.DataFrame(x, columns=list("abcd"))
    edited = frame.copy()
    edited.iloc[-1, -1] += 1e-9
    assert fit_datasets.digest((edited, y)) != fit_datasets.digest((frame, y)) == fit_datasets.digest((frame.copy(), y))
    words = pd.DataFrame({"w": ["a"] * 30_000})
    assert fit_datasets.digest((words, None)) != fit_datasets.digest((words.assign(w=["a"] * 29_999 + ["b"]), None))


def test_swapping_training_and_validation_data_changes_the_key():
    rng = np.random.default_rng(1)
    a, b = (rng.normal(size=(40, 3)), rng.normal(size=40)), (rng.normal(size=(40, 3)), rng.normal(size=40))
    assert fit_key(*a, b) != fit_key(*b, a)


def test_a_tf_data_pipelines_digest_is_marked_unhashed():
    import tensorflow as tf

    x = np.zeros((32, 3), "float32")
    pipeline = tf.data.Dataset.from_tensor_slices((x, x[:, 0])).batch(8)
    assert fit_datasets.digest((pipeline, None)).startswith(fit_datasets.UNHASHED)
    assert fit_datasets.digest((iter([x]), None)).startswith(fit_datasets.UNHASHED)
    assert fit_datasets.hashed(fit_datasets.digest((x, x[:, 0])))
