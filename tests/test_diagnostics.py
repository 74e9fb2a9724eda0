"""Residual diagnostics against statsmodels on series whose answers are known."""

import numpy as np
from statsmodels.stats.diagnostic import acorr_ljungbox
from statsmodels.tsa.stattools import adfuller

from mlflow_dl.training.diagnostics import is_white_noise, residual_tests


def test_white_noise_passes_ljung_box_and_adf():
    noise = np.random.default_rng(0).normal(size=300)
    m = residual_tests(noise)
    assert m["resid_ljungbox_lag"] == 10
    assert m["resid_ljungbox_pvalue"] == acorr_ljungbox(noise, lags=[10])["lb_pvalue"].iloc[0]
    assert m["resid_ljungbox_pvalue"] > 0.05 and m["resid_adf_pvalue"] < 0.05
    assert is_white_noise(m)


def test_random_walk_fails_adf_and_is_not_white_noise():
    walk = np.cumsum(np.random.default_rng(1).normal(size=300))
    m = residual_tests(walk)
    assert m["resid_adf_pvalue"] == adfuller(walk, autolag="AIC")[1]
    assert m["resid_adf_pvalue"] > 0.05 and m["resid_kpss_pvalue"] < 0.05 and m["resid_ljungbox_pvalue"] < 0.05
    assert not is_white_noise(m)


def test_heteroscedastic_and_skewed_residuals_are_flagged():
    rng = np.random.default_rng(2)
    growing = rng.normal(size=300) * np.linspace(0.1, 5, 300)
    assert residual_tests(growing)["resid_gq_pvalue"] < 0.05
    assert residual_tests(rng.exponential(size=300))["resid_shapiro_pvalue"] < 0.05


def test_too_short_residuals_give_nan_not_an_error():
    m = residual_tests([0.1, -0.2])
    assert np.isnan(m["resid_adf_pvalue"]) and np.isnan(m["resid_shapiro_pvalue"])
