"""Commands on runs that already exist: `sync` what waited offline, `resume` a killed run, `reap` the
abandoned ones, `diagnose` a series run's residuals."""

from __future__ import annotations

import re

import click

from mlflow_dl.cli.common import quiet_tensorflow
from mlflow_dl.delivery.outage import needs_server
from mlflow_dl.errors import ConfigError


@click.command()
@click.option("--journal-dir", default=None, help="Journal folder (default: $MLFLOW_DL_JOURNAL_DIR or .mlflow-dl/journal, and the per-user folder journals go to when that cannot be written).")
def sync(journal_dir):
    """Send what runs journaled while the tracking server was away (idempotent: nothing twice)."""
    from mlflow_dl.delivery.outage import sync_stores
    from mlflow_dl.delivery.spool import replay_all

    stores = sync_stores(journal_dir, echo=click.echo)
    done = replay_all(journal_dir)
    for name, sent in done:
        click.echo(f"{name}: {sent} records sent")
    click.echo(f"{len(done)} journals synced" + (f", {stores} offline stores" if stores else ""))


@click.command()
@click.argument("run_id")
@needs_server("resume", "read the run and log the rest of its fit into it")
def resume(run_id):
    """Continue a killed run from its last completed epoch, in the same run."""
    quiet_tensorflow()
    from mlflow_dl.training.resume import resume as resume_fn

    click.echo(resume_fn(run_id).describe())


def parse_age(text: str) -> float:
    """--older-than: '30m', '2h', '45s', '1d' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", str(text))
    if not match:
        raise ConfigError(f"older_than={text!r} is invalid; expected a number and a unit s, m, h or d (e.g. 30m)")
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


@click.command()
@click.option("--older-than", default="30m", show_default=True, help="Heartbeat age: 45s, 30m, 2h, 1d.")
@click.option("--experiment", default=None, help="Only this experiment (default: all).")
@needs_server("reap", "find the runs left RUNNING and end them")
def reap(older_than, experiment):
    """End KILLED the runs left RUNNING without a heartbeat for longer than --older-than."""
    from mlflow_dl.training.resume import reap as reap_fn

    reaped = reap_fn(parse_age(older_than), experiment)
    for run_id in reaped:
        click.echo(f"run {run_id}: KILLED")
    click.echo(f"{len(reaped)} runs reaped")


@click.command()
@click.argument("run_id")
@needs_server("diagnose", "read the run's residuals and log the diagnostics")
def diagnose(run_id):
    """Residual diagnostics of a time-series run: ACF/PACF, ADF, KPSS, Shapiro-Wilk, Ljung-Box, Goldfeld-Quandt."""
    from mlflow_dl.training.diagnostics import diagnose as diagnose_fn, is_white_noise

    metrics = diagnose_fn(run_id)
    for key, value in metrics.items():
        click.echo(f"{key} = {value:.4g}")
    click.echo(f"residuals_white_noise = {str(is_white_noise(metrics)).lower()}")
