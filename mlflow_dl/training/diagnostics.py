"""Residual diagnostics of a forecast (the lecture's list), with statsmodels and scipy.

ACF/PACF with confidence bands, stationarity (ADF, KPSS), normality (Shapiro-Wilk),
autocorrelation (Ljung-Box) and heteroscedasticity (Goldfeld-Quandt). The residuals
count as white noise when Ljung-Box finds no autocorrelation up to the logged lag
(p >= ALPHA) and ADF rejects a unit root (p < ALPHA).
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings

import numpy as np
import pandas as pd

ALPHA = 0.05
PREDICTIONS = "predictions/test.csv"  # date, actual, predicted, residual: what `diagnose` reads back


def ljungbox_lag(n: int) -> int:
    """min(10, n // 5), at least 1: Box-Jenkins' rule of thumb for short series."""
    return max(1, min(10, n // 5))


def pvalue(test) -> float:
    """A statistical test's p-value, NaN when the residuals are too few for it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # KPSS: p-value outside its table is clipped, and says so
            return float(test())
    except (ValueError, ArithmeticError, np.linalg.LinAlgError):
        return math.nan  # too few residuals for this test


def residual_tests(resid) -> dict[str, float]:
    """p-values of the five tests and the Ljung-Box lag, as metrics named resid_*."""
    from scipy import stats
    from statsmodels.stats.diagnostic import acorr_ljungbox, het_goldfeldquandt
    from statsmodels.tools import add_constant
    from statsmodels.tsa.stattools import adfuller, kpss

    r = np.asarray(resid, np.float64)
    lag = ljungbox_lag(len(r))
    return {
        "resid_adf_pvalue": pvalue(lambda: adfuller(r, autolag="AIC")[1]),
        "resid_kpss_pvalue": pvalue(lambda: kpss(r, regression="c", nlags="auto")[1]),
        "resid_shapiro_pvalue": pvalue(lambda: stats.shapiro(r).pvalue) if len(r) >= 3 else math.nan,
        "resid_ljungbox_pvalue": pvalue(lambda: acorr_ljungbox(r, lags=[lag])["lb_pvalue"].iloc[0]),
        "resid_ljungbox_lag": float(lag),
        "resid_gq_pvalue": pvalue(lambda: het_goldfeldquandt(r, add_constant(np.arange(len(r), dtype=float)))[1]),
        "resid_mean": float(r.mean()) if len(r) else math.nan,
    }


def is_white_noise(metrics: dict) -> bool:
    """Ljung-Box p >= ALPHA (no autocorrelation) and ADF p < ALPHA (stationary)."""
    return metrics["resid_ljungbox_pvalue"] >= ALPHA and metrics["resid_adf_pvalue"] < ALPHA


def figure(resid, dates=None):
    """One page: residuals over time, histogram, ACF and PACF with 95% bands."""
    from statsmodels.graphics.tsaplots import plot_acf, plot_pacf

    from mlflow_dl.fit import plots

    r = np.asarray(resid, np.float64)
    lags = max(1, min(20, len(r) // 2 - 1))
    fig, axes = plots.subplots(2, 2, figsize=(10, 7))
    axes[0, 0].plot(dates if dates is not None else np.arange(len(r)), r, linewidth=1)
    axes[0, 0].axhline(0, color="grey", linestyle="--", linewidth=1)
    axes[0, 0].set_title("residuals over time (actual - predicted)")
    axes[0, 0].tick_params(axis="x", rotation=30, labelsize=7)
    axes[0, 1].hist(r, bins=max(5, min(30, len(r) // 3)))
    axes[0, 1].set_title("histogram")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plot_acf(r, ax=axes[1, 0], lags=lags, alpha=ALPHA)
        plot_pacf(r, ax=axes[1, 1], lags=max(1, min(lags, len(r) // 2 - 1)), alpha=ALPHA, method="ywm")
    axes[1, 0].set_title("ACF (95% band)")
    axes[1, 1].set_title("PACF (95% band)")
    fig.tight_layout()
    return fig


def log_diagnostics(run_id: str, resid, dates=None) -> dict[str, float]:
    """Log the resid_* metrics, plots/residual_diagnostics.png and the tag residuals_white_noise."""
    import mlflow

    from mlflow_dl.fit import plots

    metrics = residual_tests(resid)
    client = mlflow.MlflowClient()
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, int(pd.Timestamp.now().timestamp() * 1000), 0)
                                      for k, v in metrics.items()])
    client.set_tag(run_id, "residuals_white_noise", str(is_white_noise(metrics)).lower())
    fig = figure(resid, dates)
    client.log_figure(run_id, fig, "plots/residual_diagnostics.png")
    plots.close(fig)
    return metrics


def save_predictions(run_id: str, dates, actual, predicted) -> None:
    """The test forecast as predictions/test.csv, so `diagnose` can redo the analysis later."""
    import mlflow

    frame = pd.DataFrame({"date": dates, "actual": actual, "predicted": predicted})
    frame["residual"] = frame["actual"] - frame["predicted"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, os.path.basename(PREDICTIONS))
        frame.to_csv(path, index=False)
        mlflow.MlflowClient().log_artifact(run_id, path, os.path.dirname(PREDICTIONS))


def diagnose(run_id: str) -> dict[str, float]:
    """Re-run the diagnostics of a time-series run from its logged test predictions."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from mlflow_dl.errors import ConfigError
    from mlflow_dl.delivery import runs

    runs.existing_run(run_id)
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=PREDICTIONS)
    except (MlflowException, OSError):
        raise ConfigError(f"run_id={run_id!r} has no {PREDICTIONS}; expected the id of a time-series run "
                          "(family rnn_vs_lstm)") from None
    frame = pd.read_csv(path, parse_dates=["date"])
    return log_diagnostics(run_id, frame["residual"].to_numpy(), pd.DatetimeIndex(frame["date"]))
