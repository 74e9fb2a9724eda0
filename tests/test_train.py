"""The `train` family end to end against a real SQLite store and real Keras."""

import math

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest

from conftest import artifact_paths
from mlflow_dl.config import DataSpec, FitSpec, ModelSpec, TrialSpec
from mlflow_dl.families.train import train

TINY = ModelSpec(hidden="16,8")


# one worker takes the whole module, so its module-scoped fixture runs once (each xdist worker has its own)
pytestmark = pytest.mark.xdist_group("test_train")


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    """One tracked fit shared by the assertions below (a module-level store)."""
    root = tmp_path_factory.mktemp("binary")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    spec = TrialSpec(data=DataSpec("breast_cancer"), model=TINY, fit=FitSpec(epochs=4, patience=None, lr=0.01))
    result = train(spec)
    mlflow.set_tracking_uri(None)
    return uri, spec, result


def test_run_holds_params_epoch_metrics_and_summary(binary_run):
    uri, spec, result = binary_run
    client = mlflow.MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow_dl.family"] == "train"
    for key, value in spec.params().items():
        assert run.data.params[key] == value
    assert run.data.params["keras_version"] == keras.__version__
    # a family's run holds its spec, not a user fit's params (those are for autolog / MlflowCallback)
    assert not {"batch_size", "optimizer_name", "callbacks", "layer.00.type"} & set(run.data.params)
    val = client.get_metric_history(result.run_id, "val_loss")
    assert [m.step for m in sorted(val, key=lambda m: m.step)] == [0, 1, 2, 3]
    values = [m.value for m in sorted(val, key=lambda m: m.step)]
    assert run.data.metrics["best_val_loss"] == pytest.approx(min(values))
    assert run.data.metrics["best_epoch"] == int(np.argmin(values))
    assert run.data.metrics["stopped_epoch"] == 3
    for name in ("loss", "accuracy", "auc", "val_accuracy", "val_auc"):
        assert len(client.get_metric_history(result.run_id, name)) == 4
    assert 0.5 <= run.data.metrics["test_accuracy"] <= 1
    assert 0.5 <= run.data.metrics["test_auc"] <= 1
    # dataset lineage
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == "breast_cancer" and inputs[0].dataset.digest


def test_run_holds_checkpoint_plots_and_model(binary_run):
    uri, _, result = binary_run
    paths = artifact_paths(mlflow.MlflowClient(uri), result.run_id)
    assert "checkpoints/best.keras" in paths
    assert "plots/learning_curves.png" in paths
    assert "plots/confusion_matrix.png" in paths


@pytest.mark.parametrize("labels", [["malignant", "benign"], ["a", "b", "c"]])
def test_confusion_matrix_redrawn_for_the_next_trial_is_what_a_new_figure_shows(labels):
    """Trials reuse one confusion-matrix figure: its counts, colours and scale must all be the new trial's."""
    import io

    from PIL import Image

    from mlflow_dl.fit import plots

    def pixels(fig):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return np.asarray(Image.open(buffer))

    rng = np.random.default_rng(0)
    k = len(labels)
    plots._confusion.clear()
    plots.confusion_matrix(rng.integers(0, k, 114), rng.integers(0, k, 114), labels)  # an earlier trial
    y, pred = rng.integers(0, k, 50), np.zeros(50, dtype=int)
    redrawn = pixels(plots.confusion_matrix(y, pred, labels))
    plots._confusion.clear()
    assert np.array_equal(redrawn, pixels(plots.confusion_matrix(y, pred, labels)))


def test_checkpoint_loads_in_safe_mode_and_holds_the_best_weights(binary_run, tmp_path):
    uri, spec, result = binary_run
    mlflow.set_tracking_uri(uri)
    local = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="checkpoints/best.keras",
                                                dst_path=str(tmp_path))
    model = keras.saving.load_model(local, safe_mode=True)
    from mlflow_dl.data.datasets import load_dataset
    from mlflow_dl.data.split import split_and_scale

    splits = split_and_scale(load_dataset("breast_cancer"), spec.data)
    val_loss = model.evaluate(splits.x_val, splits.y_val, verbose=0, return_dict=True)["loss"]
    run = mlflow.MlflowClient(uri).get_run(result.run_id)
    assert val_loss == pytest.approx(run.data.metrics["best_val_loss"], rel=1e-4)


def test_pyfunc_model_takes_raw_rows_with_original_names(binary_run):
    uri, spec, result = binary_run
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    from mlflow_dl.data.datasets import load_dataset

    raw = load_dataset("breast_cancer").X.head(20)
    # the input columns travel in the model's metadata (no input schema: the model checks rows itself)
    assert model.metadata.metadata["mlflow_dl"]["input_columns"] == list(raw.columns)
    out = model.predict(raw.iloc[:, ::-1])  # column order does not matter
    assert list(out.columns) == ["probability", "class"]
    assert ((out["probability"] >= 0) & (out["probability"] <= 1)).all()
    assert set(out["class"]) <= {0, 1}
    reqs = open(mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/model/requirements.txt")).read()
    assert f"keras=={keras.__version__}" in reqs


def test_regression_metrics_are_on_the_original_scale(tracking_store):
    spec = TrialSpec(data=DataSpec("diabetes", scale_y=True), model=TINY, fit=FitSpec(epochs=2, patience=None))
    result = train(spec)
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    from mlflow_dl.data.datasets import load_dataset
    from mlflow_dl.data.split import split_and_scale

    splits = split_and_scale(load_dataset("diabetes"), spec.data)
    pred = model.predict(splits.raw_test)["prediction"].to_numpy()
    mae = np.mean(np.abs(pred - splits.y_test_original))
    assert result.metrics["test_mae"] == pytest.approx(mae, rel=1e-4)
    assert mae > 10  # diabetes targets run 25..346: a scaled-space MAE would be below 2
    paths = artifact_paths(mlflow.MlflowClient(), result.run_id)
    assert "plots/predicted_vs_actual.png" in paths


def test_early_stopping_stops_and_the_best_epoch_is_kept(tracking_store):
    # lr=0.5 makes validation loss bounce: patience 1 stops early, best is not the last
    spec = TrialSpec(model=TINY, fit=FitSpec(epochs=30, patience=1, lr=0.5, seed=3))
    result = train(spec)
    client = mlflow.MlflowClient()
    history = sorted(client.get_metric_history(result.run_id, "val_loss"), key=lambda m: m.step)
    assert len(history) < 30
    assert result.metrics["stopped_epoch"] == len(history) - 1
    assert result.metrics["best_val_loss"] == pytest.approx(min(m.value for m in history))
    assert result.metrics["best_epoch"] == history[int(np.argmin([m.value for m in history]))].step


def test_multiclass_digits(tracking_store):
    result = train(TrialSpec(data=DataSpec("digits"), model=TINY, fit=FitSpec(epochs=1, patience=None)))
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    from mlflow_dl.data.datasets import load_dataset

    out = model.predict(load_dataset("digits").X.head(3))
    assert set(out["class"]) <= set(range(10))
    assert "test_accuracy" in result.metrics and math.isfinite(result.metrics["test_auc"])


def test_csv_dataset_end_to_end(tracking_store, tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"volume": rng.normal(size=60), "oil": rng.normal(size=60)})
    frame["price"] = 3 * frame["volume"] - frame["oil"] + rng.normal(scale=0.1, size=60)
    frame.to_csv(tmp_path / "prices.csv", index=False)
    result = train(TrialSpec(data=DataSpec(str(tmp_path / "prices.csv"), target="price"), model=TINY,
                             fit=FitSpec(epochs=2, patience=None)))
    run = mlflow.MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED" and "test_rmse" in run.data.metrics
    assert run.inputs.dataset_inputs[0].dataset.name == "prices"
