"""The `mlflow-dl` command line: thin wrappers over the Python API.

Nothing heavy is imported at module level, so `mlflow-dl --help` answers
without tensorflow or mlflow. User errors print one line and exit with code 2.
"""

from __future__ import annotations

import os
import sys

import click

from mlflow_dl.errors import MlflowDLError


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _patience(value: str) -> int | None:
    if str(value).lower() in ("none", "off", ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"got {value!r}; expected an integer >= 0 or 'none'") from None


def data_options(f):
    for option in reversed([
        click.option("--dataset", default="breast_cancer", show_default=True,
                     help="breast_cancer, diabetes, digits, or the path of a CSV."),
        click.option("--target", default=None, help="Target column (required for a CSV)."),
        click.option("--task", default="auto", show_default=True,
                     type=click.Choice(["auto", "binary", "multiclass", "regression"])),
        click.option("--scaler", default="minmax", show_default=True, type=click.Choice(["minmax", "standard"])),
        click.option("--scale-y/--no-scale-y", default=False, help="Standardise a regression target (metrics stay on the original scale)."),
        click.option("--dropna", is_flag=True, help="Drop rows with missing values instead of failing."),
        click.option("--seed", default=42, show_default=True, type=int),
        click.option("--experiment", default=None, help="MLflow experiment name (default: mlflow-dl)."),
    ]):
        f = option(f)
    return f


def fit_options(f):
    for option in reversed([
        click.option("--epochs", default=20, show_default=True, type=int),
        click.option("--batch-size", default=32, show_default=True, type=int),
        click.option("--lr", default=1e-3, show_default=True, type=float, help="Adam learning rate."),
        click.option("--patience", default="10", show_default=True, help="Early-stopping patience, or 'none'."),
        click.option("--min-delta", default=0.0, show_default=True, type=float),
        click.option("--restore-best-weights/--no-restore-best-weights", default=True, show_default=True),
        click.option("--verbose", default=0, type=int, help="Keras progress output (0, 1 or 2)."),
    ]):
        f = option(f)
    return f


def build_spec(kw: dict, **model_overrides):
    from mlflow_dl.config import DataSpec, FitSpec, ModelSpec, TrialSpec

    data = DataSpec(dataset=kw["dataset"], target=kw["target"] or None, task=kw["task"], scaler=kw["scaler"],
                    scale_y=kw["scale_y"], dropna=kw["dropna"], seed=kw["seed"])
    model = ModelSpec(**model_overrides)
    fit = FitSpec(epochs=kw["epochs"], batch_size=kw["batch_size"], lr=kw["lr"], patience=_patience(kw["patience"]),
                  min_delta=kw["min_delta"], restore_best_weights=kw["restore_best_weights"], seed=kw["seed"],
                  verbose=kw["verbose"])
    return TrialSpec(data=data, model=model, fit=fit)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlflow-dl")
def cli():
    """Run, track, compare and ship Keras experiments on MLflow.

    Runs go to MLFLOW_TRACKING_URI (default: sqlite:///mlflow.db in this folder).
    """


@cli.command()
@data_options
@fit_options
@click.option("--hidden", default="128,64,32", show_default=True, help="Hidden layer sizes.")
@click.option("--activation", default="relu", show_default=True)
@click.option("--l1", default=0.0, show_default=True, type=float)
@click.option("--l2", default=0.0, show_default=True, type=float)
@click.option("--reg-layers", default="all", show_default=True, type=click.Choice(["all", "widest"]),
              help="Regularise every hidden layer or only the widest.")
@click.option("--dropout", default=0.0, show_default=True, type=float, help="Rate after each hidden layer.")
@click.option("--run-name", default=None)
def train(hidden, activation, l1, l2, reg_layers, dropout, run_name, **kw):
    """Fit one MLP and track it: metrics per epoch, best epoch, checkpoint, plots, model."""
    spec = build_spec(kw, hidden=hidden, activation=activation, l1=l1, l2=l2, reg_layers=reg_layers, dropout=dropout)
    _quiet_tensorflow()
    from mlflow_dl.families.train import train as train_fn

    result = train_fn(spec, experiment=kw["experiment"], name=run_name)
    click.echo(_describe(result))


@cli.command(name="main")
@click.option("--epochs", default=30, show_default=True, type=int)
@click.option("--experiment", default=None, help="MLflow experiment name (default: mlflow-dl).")
def main_job(epochs, experiment):
    """The lesson, end to end, on the bundled data sets."""
    _quiet_tensorflow()
    from mlflow_dl.lesson import run_lesson

    run_lesson(epochs=epochs, experiment=experiment, echo=click.echo)



def _describe(result) -> str:
    m = result.metrics
    tests = ", ".join(f"{k}={v:.4g}" for k, v in m.items() if k.startswith("test_"))
    return (f"run {result.run_id} {result.status}: best_val_loss={m.get('best_val_loss', float('nan')):.4g} "
            f"at epoch {m.get('best_epoch')}; {tests}")


def main(argv=None) -> None:
    """Entry point: one-line errors with exit code 2, no tracebacks for user mistakes."""
    try:
        cli.main(args=argv, prog_name="mlflow-dl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except MlflowDLError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
