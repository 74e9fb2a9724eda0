"""Which recurrent cell, how long a window? SimpleRNN / LSTM / GRU x timesteps on a time series.

Children: one recurrent model per cell x timesteps, all scored on the same targets (every validation and test
row) whatever their window. Parent: a profile of the target, naive baselines, SARIMAX and a ridge regression
on flattened windows, ranked with the children by test MAE on those same rows.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd

from mlflow_dl.config import TrialSpec, parse_grid
from mlflow_dl.models.window_splits import WindowSplits, window_splits
from mlflow_dl.sweeps.trial_specs import Axis, Trial

QUESTION = "Which recurrent cell and how long a window forecast the series best?"
DEFAULT_CELLS = ("rnn", "lstm")
DEFAULT_TIMESTEPS = (4, 8, 16)
AXIS = Axis(key=None, label="cell / timesteps")
BEATS_TAG = "beats_persistence"
SEASONAL_AR_MAX = 60  # longer seasons (a daily series' 365) make the state space too big: SARIMAX without one


def trials(base: TrialSpec, cells=None, timesteps=None) -> list[Trial]:
    from mlflow_dl.models.recurrent import RecurrentSpec

    out = []
    for cell in parse_grid(cells, DEFAULT_CELLS, str, "cells"):
        model = replace(base.model if isinstance(base.model, RecurrentSpec) else RecurrentSpec(), cell=cell)
        for steps in parse_grid(timesteps, DEFAULT_TIMESTEPS, int, "timesteps"):
            spec = replace(base, data=replace(base.data, timesteps=steps), model=model)
            out.append(Trial(name=f"{cell}-t{steps}", spec=spec, values={"cell": cell, "timesteps": steps},
                             prepare=partial(window_splits, timesteps=steps, horizon=base.data.horizon,
                                             batch_size=base.fit.batch_size, seed=base.fit.seed),
                             build_model=build_model, after_fit=after_fit))
    return out


def load_data(spec, trials=()):
    """Load and check the series, split it chronologically, fit the scalers on train (before any run)."""
    from mlflow_dl.data.series import load_series
    from mlflow_dl.data.windows import split_series

    longest = max((t.spec.data.timesteps for t in trials), default=spec.timesteps)
    ds = load_series(spec)
    return ds, split_series(ds, spec, longest)


def build_model(spec: TrialSpec, splits: WindowSplits):
    from mlflow_dl.models.recurrent import build_recurrent

    return build_recurrent(spec.model, spec.data.timesteps, len(splits.preprocessing.columns), spec.fit.lr)


def forecast_metrics(y_true, y_pred, naive_mae: float | None = None, prefix: str = "test_") -> dict[str, float]:
    """MAE, MAPE (rows with y = 0 left out and counted), RMSE, R2, and MASE against persistence."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    err = y_true - y_pred
    nonzero = y_true != 0
    out = {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err ** 2))),
        "mape": float(np.mean(np.abs(err[nonzero] / y_true[nonzero]))) if nonzero.any() else math.nan,
        "mape_zero_rows": float((~nonzero).sum()),
        "r2": float(1 - np.sum(err ** 2) / np.sum((y_true - y_true.mean()) ** 2)) if len(y_true) > 1 else math.nan,
    }
    if naive_mae is not None:
        out["mase"] = out["mae"] / naive_mae if naive_mae > 0 else math.nan
    return {f"{prefix}{k}": v for k, v in out.items()}


def after_fit(model, splits: WindowSplits) -> dict[str, float]:
    """Inside the child run: MASE, the forecast plot, the test predictions and the residual diagnostics."""
    import mlflow

    from mlflow_dl.training import diagnostics
    from mlflow_dl.fit import plots, series_plots

    run_id = mlflow.active_run().info.run_id
    mlflow.log_params(splits.scored)
    pred = splits.preprocessing.inverse_y(model.predict(splits.x_test, verbose=0)[:, 0])
    naive_mae = float(np.mean(np.abs(splits.y_test_original - splits.persistence)))
    metrics = forecast_metrics(splits.y_test_original, pred, naive_mae)
    metrics = {k: v for k, v in metrics.items() if k in ("test_mase", "test_mape_zero_rows")}
    metrics["persistence_test_mae"] = naive_mae
    mlflow.set_tag(BEATS_TAG, str(bool(metrics["test_mase"] < 1)).lower())
    fig = series_plots.forecast(splits.test_dates, splits.y_test_original, {"model": pred, "persistence": splits.persistence})
    mlflow.log_figure(fig, "plots/actual_vs_predicted.png")
    plots.close(fig)
    diagnostics.save_predictions(run_id, splits.test_dates, splits.y_test_original, pred)
    return {**metrics, **diagnostics.log_diagnostics(run_id, splits.y_test_original - pred, splits.test_dates)}


# -- the parent ---------------------------------------------------------------------------------------------


def log_parent(ds, series, trials) -> None:
    """The lecture's step 1 on the raw target: series plot, decomposition (with a season), ADF and KPSS."""
    import mlflow

    from statsmodels.tsa.stattools import adfuller, kpss

    from mlflow_dl.training.diagnostics import pvalue
    from mlflow_dl.fit import plots, series_plots

    y = pd.Series(ds.y.to_numpy(np.float64), index=ds.dates, name=ds.y.name)
    # not `season`: under `mlflow run` that is the MLproject parameter as given (often empty)
    mlflow.log_params({"season_used": str(ds.season or 0), "season_source": ds.season_source})
    mlflow.log_metrics({"target_adf_pvalue": pvalue(lambda: adfuller(y, autolag="AIC")[1]),
                        "target_kpss_pvalue": pvalue(lambda: kpss(y, regression="c", nlags="auto")[1])})
    bounds = (series.dates["val"][0], series.dates["test"][0])
    fig = series_plots.series_profile(y, bounds)
    mlflow.log_figure(fig, "plots/profile_series.png")
    plots.close(fig)
    if ds.season and len(y) >= 2 * ds.season:
        from statsmodels.tsa.seasonal import seasonal_decompose

        fig = seasonal_decompose(y, period=ds.season).plot()
        fig.set_size_inches(8, 7)
        mlflow.log_figure(fig, "plots/profile_decomposition.png")
        plots.close(fig)


def _statistical(series, season: int | None):
    """SARIMAX(1,1,1) on the target (with a seasonal AR term up to a season of SEASONAL_AR_MAX rows)
    fitted on train, then filtered over the rest with the same parameters: one-step-ahead forecasts of
    every test row."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    full = series.all_y_original
    seasonal = (1, 0, 0, season) if season and season <= SEASONAL_AR_MAX else (0, 0, 0, 0)
    fit = SARIMAX(series.y_original["train"], order=(1, 1, 1), seasonal_order=seasonal).fit(disp=False)
    predicted = fit.apply(full).get_prediction(start=series.cuts["test"].start).predicted_mean
    return predicted, float(fit.aic), seasonal


def calendar_features(dates: pd.DatetimeIndex) -> np.ndarray:
    """Month of year and day of week as points on a circle (sin, cos): December sits next to January."""
    month = 2 * np.pi * (dates.month.to_numpy() - 1) / 12
    weekday = 2 * np.pi * dates.dayofweek.to_numpy() / 7
    return np.column_stack([np.sin(month), np.cos(month), np.sin(weekday), np.cos(weekday)])


def _ridge(series, longest: int, horizon: int):
    """The window flattened to one row plus the target date's calendar features, into a ridge
    regression fitted on the training windows."""
    from sklearn.linear_model import Ridge

    from mlflow_dl.data.windows import part_windows, target_index

    def flat(part):
        x, y = part_windows(series, part, longest, horizon)
        when = series.all_dates[target_index(series, part, longest, horizon)]
        return np.column_stack([x.reshape(len(x), -1), calendar_features(pd.DatetimeIndex(when))]), y

    model = Ridge(alpha=1e-3).fit(*flat("train"))
    return series.preprocessing.inverse_y(model.predict(flat("test")[0]))


def rank_table(table: pd.DataFrame, ds, series, trials) -> pd.DataFrame:
    """The children beside the baselines, SARIMAX and the ridge, ranked by test MAE; logged on the parent.

    Every row is scored on the same targets as the children: every row of the test part.
    """
    import mlflow

    from mlflow_dl.data.windows import persistence, seasonal_naive
    from mlflow_dl.fit import plots, series_plots

    longest = max(t.spec.data.timesteps for t in trials)
    horizon = trials[0].spec.data.horizon
    actual = series.y_original["test"]
    naive = persistence(series, "test", longest, horizon)
    naive_mae = float(np.mean(np.abs(actual - naive)))
    # metric prefix: (approach, row name, test forecast)
    approaches = {"persistence": ("naive", "persistence", naive)}
    if ds.season and ds.season >= horizon:
        approaches["seasonal_naive"] = ("naive", f"seasonal naive (season {ds.season})",
                                        seasonal_naive(series, "test", longest, horizon, ds.season))
    parent_metrics = {}
    if horizon == 1:
        try:
            predicted, aic, seasonal = _statistical(series, ds.season)
            approaches["sarimax"] = ("statistical", f"SARIMAX(1,1,1)x{seasonal}", predicted)
            parent_metrics["sarimax_aic"] = aic
        except (ValueError, np.linalg.LinAlgError) as exc:
            mlflow.set_tag("mlflow_dl.statistical_error", f"{type(exc).__name__}: {exc}"[:500])
    approaches["ridge"] = ("machine learning", f"ridge on {longest} flattened rows + calendar",
                           _ridge(series, longest, horizon))

    extra = []
    for key, (approach, name, predicted) in approaches.items():
        ok = np.isfinite(predicted)
        m = forecast_metrics(actual[ok], predicted[ok], naive_mae)
        parent_metrics.update({f"{key}_{k}": v for k, v in m.items() if k in ("test_mae", "test_mase")})
        extra.append({"trial": name, "approach": approach, **m, "status": "parent", "run_id": ""})
    mlflow.log_metrics(parent_metrics)
    children = table.assign(approach="deep learning")
    ranked = pd.concat([children, pd.DataFrame(extra)], ignore_index=True)
    ranked = ranked.sort_values("test_mae", na_position="last").reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    fig = series_plots.ranking(ranked["trial"], ranked["test_mae"], ranked["approach"], naive_mae)
    mlflow.log_figure(fig, "plots/approaches_test_mae.png")
    plots.close(fig)
    return ranked


def run(data=None, model=None, fit=None, cells=None, timesteps=None, workers: int = 1,
        experiment: str | None = None, progress: bool = True, prune=None):
    """The sweep from Python: `run(SeriesSpec("co2", interpolate=True), RecurrentSpec(units=(16,)))`."""
    from mlflow_dl.data.series import SeriesSpec
    from mlflow_dl.models.recurrent import RecurrentSpec
    from mlflow_dl.sweeps.runner import sweep

    return sweep(sys.modules[__name__], data=data or SeriesSpec(), model=model or RecurrentSpec(), fit=fit,
                 workers=workers, experiment=experiment, progress=progress, prune=prune, cells=cells, timesteps=timesteps)
