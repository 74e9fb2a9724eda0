"""PCA family: scree numbers, parent pictures, a served PCA model fed raw rows, bad component counts."""

import io

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

from conftest import all_runs, artifact_paths
from mlflow_dl.cli import main as cli_main
from mlflow_dl.config import DataSpec, FitSpec, ModelSpec
from mlflow_dl.data.datasets import load_dataset
from mlflow_dl.data.preprocessing import Preprocessing
from mlflow_dl.data.reduction import pca_splits
from mlflow_dl.data.split import split_and_scale


# one worker takes the whole module, so its module-scoped fixture runs once (each xdist worker has its own)
pytestmark = pytest.mark.xdist_group("test_pca")


@pytest.fixture(scope="module")
def splits():
    return split_and_scale(load_dataset("breast_cancer"), DataSpec())


@pytest.fixture(scope="module")
def sweep_result(tmp_path_factory):
    """One tiny PCA sweep (2 components and raw, 1 epoch) shared by the assertions below."""
    from mlflow_dl.families import sweep

    root = tmp_path_factory.mktemp("pca")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    result = sweep("pca", model=ModelSpec(hidden=(4,)), fit=FitSpec(epochs=1, patience=None), components="2,raw",
                   progress=False)
    mlflow.set_tracking_uri(None)
    return uri, result


def test_pca_preprocessing_projects_after_scaling_and_survives_json(splits):
    reduced = pca_splits(splits, 3)
    prep = reduced.preprocessing
    expected = PCA(3, svd_solver="full").fit(splits.x_train).transform(splits.x_test)
    np.testing.assert_allclose(prep.transform(splits.raw_test), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(reduced.x_test, expected, rtol=1e-4, atol=1e-4)
    assert Preprocessing.from_json(prep.to_json()) == prep


def test_children_and_parent_scree_tsne(sweep_result, splits):
    uri, result = sweep_result
    client = mlflow.MlflowClient(uri)
    kids = {r.info.run_name: r for r in all_runs(uri) if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id}
    assert set(kids) == {"pca=2", "raw"} and all(k.info.status == "FINISHED" for k in kids.values())
    assert kids["pca=2"].data.params["trial.components"] == "2"
    parent = client.get_run(result.parent_run_id)
    paths = set(artifact_paths(client, result.parent_run_id))
    assert {"plots/scree.png", "plots/tsne.png", "pca/explained_variance.csv", "results.csv"} <= paths
    # the scree numbers are scikit-learn's, on the scaled training rows only
    csv = mlflow.artifacts.download_artifacts(run_id=result.parent_run_id, artifact_path="pca/explained_variance.csv",
                                              tracking_uri=uri)
    scree = pd.read_csv(csv)
    ratio = PCA().fit(splits.x_train).explained_variance_ratio_
    np.testing.assert_allclose(scree["explained_variance_ratio"], ratio, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scree["cumulative"], np.cumsum(ratio), rtol=1e-5, atol=1e-6)
    for target in (90, 95, 99):
        assert parent.data.metrics[f"pca_components_{target}"] == np.argmax(np.cumsum(ratio) >= target / 100) + 1
    assert 1 <= parent.data.metrics["pca_elbow"] <= len(ratio)
    table = pd.read_csv(io.StringIO(open(mlflow.artifacts.download_artifacts(
        run_id=result.parent_run_id, artifact_path="results.csv", tracking_uri=uri)).read()))
    assert table.set_index("trial").loc["pca=2", "total_params"] < table.set_index("trial").loc["raw", "total_params"]


def test_served_pca_model_takes_raw_rows_like_the_in_process_pipeline(sweep_result, splits, tmp_path):
    uri, result = sweep_result
    mlflow.set_tracking_uri(uri)
    run_id = result.table.set_index("trial").loc["pca=2", "run_id"]
    served = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert served.metadata.metadata["mlflow_dl"]["pca_components"] == 2
    checkpoint = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints/best.keras",
                                                     dst_path=str(tmp_path))
    model = keras.saving.load_model(checkpoint, safe_mode=True)
    mlflow.set_tracking_uri(None)
    # in process: scikit-learn's PCA on the scaled training rows, then the network
    features = PCA(2, svd_solver="full").fit(splits.x_train).transform(splits.x_test)
    expected = model.predict(features, verbose=0)[:, 0]
    got = served.predict(splits.raw_test)  # raw rows, original column names
    np.testing.assert_allclose(got["probability"], expected, rtol=1e-4, atol=1e-5)
    assert list(got["class"]) == list((expected >= 0.5).astype(int))


@pytest.mark.parametrize("args, named", [
    (["--components", "2,31"], "components=31 is larger than the data allows (30 features"),
    (["--components", "0"], "components='0' is invalid"),
    (["--components", "2,many"], "components='many' is invalid"),
])
def test_bad_components_one_line_exit_2_and_no_run(args, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["sweep", "pca", "--epochs", "1", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and named in err and len(err.splitlines()) == 1
    if "larger" in named:
        assert all_runs() == []  # checked against the data before the parent run starts


def test_components_larger_than_training_rows(tmp_path, capsys):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(8, 10)), columns=[f"x{i}" for i in range(10)]).assign(y=[0, 1] * 4)
    frame.to_csv(tmp_path / "wide.csv", index=False)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["sweep", "pca", "--dataset", str(tmp_path / "wide.csv"), "--target", "y", "--components", "5"])
    assert exit_info.value.code == 2
    assert "components=5 is larger than the data allows (10 features, 4 training rows)" in capsys.readouterr().err
    assert all_runs() == []
