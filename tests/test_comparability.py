"""The comparability key: what changes it and what does not."""

import keras

from mlflow_dl.tracking import comparability as c

BASE = dict(digest="abc", target="y", task="regression", loss="mse", scale_y=False,
            split=c.split_text(42, 0.2, 0.2), horizon=None)


def test_every_part_changes_the_key_and_the_name_does_not():
    k = c.key(**BASE)
    assert len(k) == 12 and c.key(**BASE) == k
    for part, other in dict(digest="abd", target="z", task="binary", loss="mae", scale_y=True,
                            split=c.split_text(7, 0.2, 0.2), horizon=3).items():
        assert c.key(**{**BASE, part: other}) != k, part
    assert c.tags("a", **BASE)[c.KEY_TAG] == c.tags("renamed", **BASE)[c.KEY_TAG] == k
    assert c.tags("a", **BASE)[c.DATASET_TAG] == "a"


def test_a_chronological_split_ignores_the_seed_and_the_window_is_no_part():
    assert c.split_text(1, 0.15, 0.15, chronological=True) == c.split_text(2, 0.15, 0.15, chronological=True)
    assert "timesteps" not in c.PARTS and "window" not in c.PARTS


def test_fit_tags_of_a_users_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("adam", keras.losses.Huber())
    tags = c.fit_tags(model, "xs", ["d2", "d1"], "validation_split=0.2")
    assert tags["mlflow_dl.comparability.loss"] == "huber_loss"
    assert tags["mlflow_dl.comparability.digest"] == "d1,d2"
    assert tags[c.KEY_TAG] != c.fit_tags(model, "xs", ["d1", "d2"], "validation_data")[c.KEY_TAG]
