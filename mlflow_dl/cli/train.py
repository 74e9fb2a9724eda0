"""`train` (one run) and `main` (the lesson end to end)."""

from __future__ import annotations

import click

from mlflow_dl.cli.common import build_spec, data_options, fit_options, model_options, quiet_tensorflow
from mlflow_dl.delivery.outage import trains_offline


@click.command()
@data_options
@fit_options
@model_options
@click.option("--run-name", default=None)
@trains_offline
def train(run_name, **kw):
    """Fit one MLP and track it: metrics per epoch, best epoch, checkpoint, plots, model."""
    spec = build_spec(kw)
    quiet_tensorflow()
    from mlflow_dl.families.train import train as train_fn

    result = train_fn(spec, experiment=kw["experiment"], name=run_name)
    click.echo(result.describe())


@click.command(name="main")
@click.option("--epochs", default=30, show_default=True, type=int)
@click.option("--experiment", default=None, help="MLflow experiment name (default: mlflow-dl).")
@trains_offline
def main_job(epochs, experiment):
    """The lesson, end to end, on the bundled data sets."""
    quiet_tensorflow()
    from mlflow_dl.lesson import run_lesson

    run_lesson(epochs=epochs, experiment=experiment, echo=click.echo)
