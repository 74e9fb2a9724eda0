"""The one browser test: a real headless Chromium opens the experiment in the MLflow UI."""

import os
import shutil

import mlflow
import pytest

from mlflow_dl.config import FitSpec, ModelSpec
from mlflow_dl.families import sweep

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and DRIVER) and not os.environ.get("CI"),
                       reason="needs Chromium and chromedriver on the PATH: apt-get install chromium chromium-driver "
                              "(Debian/Ubuntu; .ci/run installs them) or brew install --cask chromium chromedriver"),
]


def test_mlflow_ui_lists_the_sweep_parent_and_its_children(mlflow_server, monkeypatch, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    result = sweep("dropout", rates="0,0.5", model=ModelSpec(hidden="4"), fit=FitSpec(epochs=1, patience=None),
                   experiment="ui-test", progress=False)
    experiment_id = mlflow.get_run(result.parent_run_id).info.experiment_id

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,800", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(f"{mlflow_server}/#/experiments/{experiment_id}/runs")
        WebDriverWait(driver, 90).until(lambda d: "dropout sweep" in d.page_source)
        assert "Training runs" in driver.page_source  # experimentKind opens the model-training view
        # children are nested under the parent: expand it, as a user would
        driver.find_element(By.CSS_SELECTOR, "button[data-component-id*=runnamecellrenderer]").click()
        WebDriverWait(driver, 60).until(lambda d: "dropout=0.5" in d.page_source and "dropout=0<" in d.page_source)
        driver.save_screenshot(str(tmp_path / "mlflow-ui-sweep.png"))
        if os.environ.get("MLFLOW_DL_SCREENSHOT"):  # refresh docs/ on demand
            driver.save_screenshot(os.environ["MLFLOW_DL_SCREENSHOT"])
    finally:
        driver.quit()
    assert (tmp_path / "mlflow-ui-sweep.png").stat().st_size > 10_000
