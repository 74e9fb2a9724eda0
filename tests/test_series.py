"""Time series: windows equal the lecture's temporalize, no look-ahead, bad input, the rnn_vs_lstm sweep."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from conftest import REPO, all_runs
from mlflow_dl.cli import main
from mlflow_dl.data.series import SeriesSpec, load_series
from mlflow_dl.data.windows import part_windows, split_series, target_index, windows


def temporalize(X, y, timesteps, horizon=1):
    """The lecture's nested loops: the `timesteps` rows before each target, as a 3-D list."""
    output_X, output_y = [], []
    for i in range(len(X) - timesteps - horizon + 1):
        t = []
        for j in range(timesteps):
            t.append(X[i + j, :])
        output_X.append(t)
        output_y.append(y[i + timesteps + horizon - 1])
    return np.array(output_X), np.array(output_y)


@pytest.mark.parametrize("rows,features,timesteps,horizon", [
    (10, 1, 1, 1), (10, 3, 4, 1), (17, 2, 5, 3), (30, 4, 29, 1), (12, 2, 3, 9), (8, 3, 8, 1)])
def test_windows_equal_temporalize(rows, features, timesteps, horizon):
    rng = np.random.default_rng(rows * timesteps + horizon)
    x, y = rng.normal(size=(rows, features)), rng.normal(size=rows)
    got_x, got_y = windows(x, y, timesteps, horizon)
    want_x, want_y = temporalize(x, y, timesteps, horizon)
    assert got_x.shape == (max(rows - timesteps - horizon + 1, 0), timesteps, features)
    assert np.array_equal(got_x, want_x.reshape(got_x.shape)) and np.array_equal(got_y, want_y)
    assert got_x.size == 0 or np.shares_memory(got_x, x)  # a view: nothing copied


def _csv(tmp_path, n=80, name="prices.csv", **change):
    dates = pd.date_range("2020-01-01", periods=n, freq="D")
    t = np.arange(n)
    frame = pd.DataFrame({"date": dates.strftime("%Y-%m-%d"),
                          "price": 10 + np.sin(t / 3) + t * 0.05 + 0.8 * np.sin(2 * np.pi * t / 7),  # weekly
                          "volume": 100 + (t % 7), "oil": 50 + np.cos(t / 5)})
    for key, fn in change.items():
        frame = fn(frame)
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def test_no_training_target_is_a_validation_or_test_row(tmp_path):
    spec = SeriesSpec(_csv(tmp_path), target="price", date_column="date", timesteps=5, horizon=2)
    ds = load_series(spec)
    splits = split_series(ds, spec)
    n_train = splits.rows("train")
    train_targets = target_index(splits, "train", 5, 2)
    assert train_targets[-1] == n_train - 1 and len(train_targets) == n_train - 5 - 2 + 1
    assert splits.dates["train"][-1] < splits.dates["val"][0] and splits.dates["val"][-1] < splits.dates["test"][0]
    x_train, y_train = part_windows(splits, "train", 5, 2)
    assert len(y_train) == len(x_train) == len(train_targets) and np.shares_memory(x_train, splits.all_x)
    # the scaler saw the training rows only: train spans [0, 1], later rows may leave it
    assert splits.x["train"].min() == pytest.approx(0) and splits.x["train"].max() == pytest.approx(1)
    assert splits.x["test"][:, 0].max() > 1  # the price trends up past the training range


@pytest.mark.parametrize("horizon", [1, 3])
def test_window_lengths_are_scored_on_the_same_target_rows(horizon):
    from mlflow_dl.models.window_splits import window_splits

    spec = SeriesSpec("sunspots", horizon=horizon)
    series = split_series(load_series(spec), spec, 16)
    short, long = (window_splits(series, t, horizon, 8, 0) for t in (4, 16))
    for part, feed in (("val", "x_val"), ("test", "x_test")):
        targets = [np.concatenate([b[1][:, 0] for b in getattr(s, feed)]) for s in (short, long)]
        # every row of the part, from its first, for both window lengths
        assert np.array_equal(targets[0], series.y[part]) and np.array_equal(targets[1], series.y[part])
    assert short.test_dates.equals(series.dates["test"]) and long.test_dates.equals(series.dates["test"])
    assert np.array_equal(short.persistence, long.persistence)
    assert short.scored == long.scored and short.scored["val_rows"] == str(series.rows("val"))
    # a window's inputs are the `timesteps` rows ending `horizon` rows before its target (past rows only)
    first = long.x_val[0][0][0]
    start = series.cuts["val"].start
    assert np.array_equal(first, series.all_x[start - horizon - 15:start - horizon + 1])
    # no training target is a validation or test row
    assert np.concatenate([b[1][:, 0] for b in long.x_train]).size == series.rows("train") - 16 - horizon + 1


def _with_gaps(tmp_path, name, **change):
    """80 daily rows: train 0-55, validation 56-67, test 68-79; gaps at both split edges and a missing value."""
    def edit(frame):
        frame = frame.assign(oil=frame["oil"].where(frame.index != 55))  # the last training row
        for row, values in change.items():
            frame.loc[int(row[1:]), list(values)] = list(values.values())
        return frame.drop(index=[56, 67, 68])  # the first validation row, the last one, the first test row
    return _csv(tmp_path, n=80, name=name, x=edit)


def test_a_changed_test_value_moves_no_training_or_validation_input_target_or_fill(tmp_path):
    from mlflow_dl.models.window_splits import window_splits

    def load(path):
        spec = SeriesSpec(path, target="price", date_column="date", timesteps=5, interpolate=True)
        ds = load_series(spec)
        return ds, window_splits(split_series(ds, spec), 5, 1, 8, 0)

    base_ds, base = load(_with_gaps(tmp_path, "base.csv"))
    test_ds, test = load(_with_gaps(tmp_path, "test.csv", r69={"price": 99.0, "oil": -5.0, "volume": 0.0}))
    val_ds, _ = load(_with_gaps(tmp_path, "val.csv", r57={"price": 99.0, "oil": -5.0, "volume": 0.0}))
    assert len(base_ds.X) == 80 and not base_ds.X.isna().any().any()
    # filled without look-ahead: inside the training part from its own rows, after it forward only
    oil, price = base_ds.X["oil"], base_ds.X["price"]
    assert oil[55] == oil[54] and price[56] == price[55] and price[67] == price[66] and price[68] == price[66]
    # a changed test row: the same training and validation rows (fill included), inputs and targets
    pd.testing.assert_frame_equal(test_ds.X.iloc[:68], base_ds.X.iloc[:68])
    for feed in ("x_train", "x_val"):
        for (bx, by), (tx, ty) in zip(getattr(base, feed), getattr(test, feed), strict=True):
            assert np.array_equal(bx, tx) and np.array_equal(by, ty)
    assert not test_ds.X.iloc[68:].equals(base_ds.X.iloc[68:])
    # a changed validation row: the same training rows, fill included
    pd.testing.assert_frame_equal(val_ds.X.iloc[:56], base_ds.X.iloc[:56])


def test_the_season_comes_from_the_frequency_unless_given(tmp_path):
    path = _csv(tmp_path)  # 80 daily rows, 56 of them training
    assert load_series(SeriesSpec(path, target="price", date_column="date")).season == 7
    assert load_series(SeriesSpec(path, target="price", date_column="date", season=0)).season is None
    assert load_series(SeriesSpec(path, target="price", date_column="date", season=28)).season == 28
    weekly = _csv(tmp_path, name="weekly.csv", x=lambda f: f.assign(date=pd.date_range(
        "2020-01-05", periods=len(f), freq="W-SUN").strftime("%Y-%m-%d")))
    ds = load_series(SeriesSpec(weekly, target="price", date_column="date"))  # 52 > 56 / 2: none, and why
    assert ds.season is None and ds.season_source.startswith("none (frequency W-SUN has season 52")

    from mlflow_dl.data.series import frequency_season

    assert [frequency_season(f) for f in ("D", "B", "W-SUN", "MS", "QS-OCT", "h", "YS-JAN", "2D", "min")] == [
        7, 5, 52, 12, 4, 24, None, None, None]


def test_served_preprocessing_builds_windows_from_raw_rows(tmp_path):
    spec = SeriesSpec(_csv(tmp_path), target="price", date_column="date", timesteps=4)
    splits = split_series(load_series(spec), spec)
    prep = splits.preprocessing
    got = prep.transform(splits.raw["test"].head(6))
    assert got.shape == (3, 4, 3)
    assert np.allclose(got, windows(splits.x["test"], splits.y["test"], 4, 0)[0][:3])


def test_bundled_series_load_with_their_checks():
    assert load_series(SeriesSpec("macrodata")).season == 4
    sun = load_series(SeriesSpec("sunspots"))
    assert sun.freq.startswith("YS") and list(sun.X.columns) == ["SUNACTIVITY"]
    assert sun.season is None  # yearly: freq_to_period 1, no season
    with pytest.raises(ValueError, match="missing values in columns: co2"):
        load_series(SeriesSpec("co2"))
    co2 = load_series(SeriesSpec("co2", interpolate=True))
    assert not co2.X.isna().any().any() and co2.season == 52


BAD = {
    "unparsable dates": (dict(x=lambda f: f.assign(date=f["date"].where(f.index != 5, "not a date"))),
                         "unparsable dates (first 'not a date' at row 5)"),
    "unsorted": (dict(x=lambda f: f.iloc[[1, 0] + list(range(2, len(f)))]), "dates are not in increasing order"),
    "duplicates": (dict(x=lambda f: pd.concat([f.iloc[:3], f.iloc[2:]])), "1 duplicate timestamps"),
    "gap": (dict(x=lambda f: f.drop(index=[10, 11])), "2 gaps in the dates at frequency D"),
    "nan": (dict(x=lambda f: f.assign(oil=f["oil"].where(f.index != 4))), "missing values in columns: oil (1)"),
    "non-numeric target": (dict(x=lambda f: f.assign(price="high")), "target='price' is not numeric"),
}


@pytest.mark.parametrize("case", list(BAD) + ["short split", "long season"])
def test_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, case):
    if case == "short split":
        path, expected = _csv(tmp_path, n=40), "the train split has 28 rows (of 40), shorter than timesteps + horizon = 31"
        extra = ["--timesteps", "4,30"]
    elif case == "long season":
        path, extra = _csv(tmp_path), ["--season", "30"]
        expected = ("season=30 is invalid for a training part of 56 rows; expected 0 (none) or a period from 2 to 28 "
                    "(two seasons must fit in it)")
    else:
        change, expected = BAD[case]
        path, extra = _csv(tmp_path, **change), []
    with pytest.raises(SystemExit) as exit_info:
        main(["rnn-vs-lstm", "--dataset", path, "--target", "price", "--date-column", "date", "--epochs", "1", *extra])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert len(err.splitlines()) == 1 and expected in err, err
    assert all_runs() == []


def test_rnn_vs_lstm_sweep_end_to_end(tmp_path, capsys):
    # daily with a weekly pattern (season 7 without --season); gaps at both split edges, filled
    path = _csv(tmp_path, n=90, x=lambda f: f.drop(index=[61, 62, 76]))
    with pytest.raises(SystemExit) as exit_info:
        main(["rnn-vs-lstm", "--dataset", path, "--target", "price", "--date-column", "date", "--cells", "rnn,lstm",
              "--timesteps", "3,6", "--units", "4", "--epochs", "1", "--patience", "none", "--interpolate"])
    assert exit_info.value.code == 0
    runs = all_runs()
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(children) == ["lstm-t3", "lstm-t6", "rnn-t3", "rnn-t6"]
    assert all(r.info.status == "FINISHED" for r in runs), [r.data.tags.get("mlflow_dl.error") for r in runs]
    client = mlflow.MlflowClient()

    # the parent: profile, baselines, the three approaches ranked
    for key in ("target_adf_pvalue", "target_kpss_pvalue", "persistence_test_mae", "seasonal_naive_test_mae",
                "sarimax_aic", "sarimax_test_mae", "ridge_test_mae"):
        assert np.isfinite(parent.data.metrics[key]), key
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/profile_series.png", "plots/profile_decomposition.png", "plots/approaches_test_mae.png"} <= plots
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "results.csv"))
    assert set(table["approach"]) == {"naive", "statistical", "machine learning", "deep learning"}
    assert list(table["rank"]) == list(range(1, 9)) and table["test_mae"].is_monotonic_increasing
    assert table.loc[table["trial"] == "persistence", "test_mase"].item() == pytest.approx(1.0)
    # the season from the daily frequency: a seasonal naive baseline and a seasonal SARIMAX
    assert parent.data.params["season_used"] == "7" and parent.data.params["season_source"] == "frequency D"
    assert {"seasonal naive (season 7)", "SARIMAX(1,1,1)x(1, 0, 0, 7)"} <= set(table["trial"])

    # every child scored on the same rows: all 14 of validation, all 14 of test, whatever its window
    scored = {name: {k: v for k, v in r.data.params.items() if k.startswith(("val_", "test_"))}
              for name, r in children.items()}
    dates = pd.date_range("2020-01-01", periods=90, freq="D")
    assert scored["rnn-t3"] == scored["rnn-t6"] == scored["lstm-t3"] == scored["lstm-t6"] == {
        "val_rows": "14", "val_first_target": str(dates[62].date()), "val_last_target": str(dates[75].date()),
        "test_rows": "14", "test_first_target": str(dates[76].date()), "test_last_target": str(dates[89].date())}
    naive = {r.data.metrics["persistence_test_mae"] for r in children.values()}
    assert len(naive) == 1 and naive.pop() == pytest.approx(parent.data.metrics["persistence_test_mae"])

    # a child: metrics on the original scale, MASE, diagnostics, forecast plot, a model that takes raw rows
    child = children["lstm-t6"]
    m = child.data.metrics
    for key in ("test_mae", "test_mape", "test_rmse", "test_r2", "test_mase", "resid_adf_pvalue",
                "resid_kpss_pvalue", "resid_shapiro_pvalue", "resid_ljungbox_pvalue", "resid_gq_pvalue"):
        assert key in m, key
    assert m["test_mase"] == pytest.approx(m["test_mae"] / m["persistence_test_mae"])
    assert child.data.tags["beats_persistence"] == str(m["test_mase"] < 1).lower()
    assert child.data.tags["residuals_white_noise"] in ("true", "false")
    plots = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
    assert {"plots/actual_vs_predicted.png", "plots/residual_diagnostics.png", "plots/learning_curves.png"} <= plots
    model = mlflow.pyfunc.load_model(f"runs:/{child.info.run_id}/model")
    raw = pd.read_csv(path).drop(columns=["date"]).tail(8)
    out = model.predict(raw)
    assert list(out.columns) == ["prediction"] and len(out) == 3 and np.isfinite(out["prediction"]).all()
    with pytest.raises(Exception, match="fewer than the 6 consecutive rows"):
        model.predict(raw.head(5))

    # diagnose recomputes the same p-values from the logged test predictions
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["diagnose", child.info.run_id])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"resid_ljungbox_pvalue = {m['resid_ljungbox_pvalue']:.4g}" in out


def test_diagnose_names_a_run_without_predictions(capsys):
    with mlflow.start_run() as run:  # a run, but not a time-series one
        pass
    with pytest.raises(SystemExit) as exit_info:
        main(["diagnose", run.info.run_id])
    assert exit_info.value.code == 2
    assert f"run_id='{run.info.run_id}' has no predictions/test.csv" in capsys.readouterr().err


@pytest.mark.slow
def test_rnn_vs_lstm_entry_point_through_mlflow_run(tracking_store):
    out = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", REPO, "-e", "rnn_vs_lstm", "--env-manager", "local",
         "-P", "dataset=macrodata", "-P", "cells=rnn,gru", "-P", "timesteps=4", "-P", "units=4", "-P", "epochs=1"],
        capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": tracking_store}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = all_runs(tracking_store)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    assert {r.info.run_name for r in runs if "mlflow.parentRunId" in r.data.tags} == {"rnn-t4", "gru-t4"}
    assert all(r.data.tags["mlflow_dl.family"] == "rnn_vs_lstm" for r in runs)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.params["season_used"] == "4" and parent.data.params["season_source"] == "frequency QS-JAN"


@pytest.mark.parametrize("flatten", [False, True])
def test_recurrent_stack_returns_sequences_except_the_last(flatten):
    from mlflow_dl.models.recurrent import RecurrentSpec, build_recurrent

    model = build_recurrent(RecurrentSpec(cell="gru", units=(6, 4), flatten=flatten), timesteps=5, n_features=3)
    grus = [layer for layer in model.layers if type(layer).__name__ == "GRU"]
    assert [g.return_sequences for g in grus] == [True, flatten] and grus[0].activation.__name__ == "tanh"
    assert any(type(layer).__name__ == "Flatten" for layer in model.layers) == flatten
    assert model.output_shape == (None, 1)


def test_calendar_features_put_december_next_to_january():
    from mlflow_dl.families.rnn_vs_lstm import calendar_features

    f = calendar_features(pd.DatetimeIndex(["2024-01-01", "2024-12-01", "2024-07-01"]))
    assert f.shape == (3, 4)
    dec_jan = np.linalg.norm(f[0, :2] - f[1, :2])
    jan_jul = np.linalg.norm(f[0, :2] - f[2, :2])
    assert dec_jan < 0.6 < jan_jul == pytest.approx(2.0)
