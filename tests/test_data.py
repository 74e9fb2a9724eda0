import numpy as np
import pandas as pd
import pytest

from mlflow_dl.config import DataSpec
from mlflow_dl.data.datasets import load_dataset
from mlflow_dl.data.preprocessing import InputError, Preprocessing
from mlflow_dl.data.split import split_and_scale
from mlflow_dl.errors import DataError


@pytest.mark.parametrize("name, task, n_classes", [("breast_cancer", "binary", 2), ("diabetes", "regression", 0),
                                                     ("digits", "multiclass", 10)])
def test_bundled_datasets_load_offline_with_their_task(name, task, n_classes):
    ds = load_dataset(name)
    assert ds.task == task
    assert len(ds.classes or ()) == n_classes
    assert len(ds.X) == len(ds.y) > 100


def test_scaler_is_fitted_on_the_training_part_only():
    ds = load_dataset("breast_cancer")
    splits = split_and_scale(ds, DataSpec())
    # MinMax fitted on train: train spans exactly [0, 1]; val/test may leave it
    assert np.allclose(splits.x_train.min(axis=0), 0, atol=1e-5)
    assert np.allclose(splits.x_train.max(axis=0), 1, atol=1e-5)
    n = len(ds.X)
    assert len(splits.x_train) + len(splits.x_val) + len(splits.x_test) == n
    # the test rows kept raw are the rows that were scaled
    assert np.allclose(splits.preprocessing.transform(splits.raw_test), splits.x_test)
    # fitted on all rows, every scaled value would lie in [0, 1]; fitted on train, held-out extremes leave it
    full = splits.preprocessing.transform(ds.X)
    assert (full < -1e-6).any() or (full > 1 + 1e-6).any()


def test_standard_scaler_and_y_scaler_round_trip():
    ds = load_dataset("diabetes")
    splits = split_and_scale(ds, DataSpec("diabetes", scaler="standard", scale_y=True))
    assert abs(splits.x_train.mean()) < 1e-5
    assert abs(splits.y_train.mean()) < 1e-5 and abs(splits.y_train.std() - 1) < 1e-3
    assert np.allclose(splits.preprocessing.inverse_y(splits.y_test), splits.y_test_original, atol=1e-3)


def test_same_seed_same_split_other_seed_other_split():
    ds = load_dataset("breast_cancer")
    a, b = split_and_scale(ds, DataSpec(seed=1)), split_and_scale(ds, DataSpec(seed=1))
    c = split_and_scale(ds, DataSpec(seed=2))
    assert np.array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)


def write_csv(tmp_path, frame, name="data.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def test_csv_with_string_target_is_classification(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40),
                          "label": ["yes", "no"] * 20})
    ds = load_dataset(write_csv(tmp_path, frame), target="label")
    assert ds.task == "binary" and ds.classes == ("no", "yes")


@pytest.mark.parametrize("frame, target, dropna, pieces", [
    (pd.DataFrame({"a": [1.0, 2.0]}), "price", False, ["target='price'", "columns are: a"]),
    (pd.DataFrame({"a": [1.0, 2.0], "city": ["x", "y"], "y": [1, 2]}), "y", False, ["non-numeric", "city"]),
    (pd.DataFrame({"a": [1.0, None, None], "b": [None, 1.0, 2.0], "y": [1, 2, 3]}), "y", False,
     ["missing values", "a (2)", "b (1)", "--dropna"]),
])
def test_csv_problems_name_the_columns(tmp_path, frame, target, dropna, pieces):
    with pytest.raises(DataError) as err:
        load_dataset(write_csv(tmp_path, frame), target=target, dropna=dropna)
    for piece in pieces:
        assert piece in str(err.value)


def test_dropna_drops_the_rows(tmp_path):
    frame = pd.DataFrame({"a": [1.0, None, 3.0, 4.0], "y": [1.0, 2.0, 3.5, 4.5]})
    ds = load_dataset(write_csv(tmp_path, frame), target="y", dropna=True)
    assert len(ds.X) == 3


def test_missing_file_and_missing_target_for_csv(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "absent.csv"), target="y")
    path = write_csv(tmp_path, pd.DataFrame({"a": [1.0], "y": [2.0]}))
    with pytest.raises(DataError, match="needs --target"):
        load_dataset(path)


def test_too_few_rows_for_the_split(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.5]})
    ds = load_dataset(write_csv(tmp_path, frame), target="y")
    with pytest.raises(DataError, match="too few for the split"):
        split_and_scale(ds, DataSpec(dataset="x.csv"))


def test_preprocessing_rejects_wrong_columns_and_round_trips_json():
    prep = Preprocessing(columns=("a", "b"), x_scale=(2.0, 1.0), x_offset=(0.0, -1.0), task="regression", target="y")
    assert np.allclose(prep.transform(pd.DataFrame({"b": [1.0], "a": [3.0]})), [[6.0, 0.0]])
    with pytest.raises(InputError, match=r"missing columns \['b'\].*expected rows with the columns \['a', 'b'\]"):
        prep.transform(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(InputError, match="unexpected columns"):
        prep.transform(pd.DataFrame({"a": [1.0], "b": [1.0], "c": [1.0]}))
    with pytest.raises(InputError, match="no rows"):
        prep.transform(pd.DataFrame({"a": [], "b": []}))
    assert Preprocessing.from_json(prep.to_json()) == prep
