"""The `mlflow-dl` command line: thin wrappers over the Python API.

Nothing heavy is imported at module level, so `mlflow-dl --help` answers
without tensorflow or mlflow. User errors print one line and exit with code 2.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

import click

from mlflow_dl.errors import MlflowDLError
from mlflow_dl.delivery.outage import ServerUnreachable, needs_server, offline, trains_offline


def _quiet_tensorflow() -> None:
    """Keep a terminal readable (TF's C++ logs, retracing notes and MLflow's schema hints off), and
    claim TensorFlow's settings for this process (tf_runtime: Grappler off unless MLFLOW_DL_GRAPPLER=on)."""
    import logging
    import warnings

    from mlflow_dl.runtime import tf_runtime

    tf_runtime.own_process()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")


def _patience(value: str) -> int | None:
    if str(value).lower() in ("none", "off", ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"got {value!r}; expected an integer >= 0 or 'none'") from None


def prune_options(f):
    """--prune and its settings: Optuna's rule stops losing trials (pruning.py)."""
    for option in reversed([
        click.option("--prune", type=click.BOOL, default=False, is_flag=False, flag_value=True,
                     help="Stop trials whose val_loss falls behind, by Optuna's pruner "
                     "(`--prune`, or `--prune true|false`)."),
        click.option("--prune-rule", default="median", show_default=True, type=click.Choice(["median", "halving"]),
                     help="median: Optuna's MedianPruner; halving: its SuccessiveHalvingPruner."),
        click.option("--prune-warmup", default=None, type=int,
                     help="Epochs no trial is judged on (default: a tenth of --epochs, at least 2)."),
        click.option("--prune-startup", default=2, show_default=True, type=int,
                     help="Trials that must finish before the median rule prunes."),
    ]):
        f = option(f)
    return f


def prune_spec(kw: dict):
    """The PruneSpec of the --prune options (popped from `kw`), or None when --prune is off."""
    on, rule, warmup, startup = (kw.pop(k) for k in ("prune", "prune_rule", "prune_warmup", "prune_startup"))
    if not on:
        return None
    from mlflow_dl.training.pruning import PruneSpec

    return PruneSpec(rule=rule, warmup=warmup, startup=startup)


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


def build_spec(kw: dict):
    """Specs from the options present; an option a sweep grid replaces keeps the spec's default."""
    from mlflow_dl.config import DataSpec, FitSpec, ModelSpec, TrialSpec

    def pick(names):
        return {n: kw[n] for n in names if n in kw}

    data = DataSpec(**pick(("dataset", "task", "scaler", "scale_y", "dropna", "seed")), target=kw.get("target") or None)
    fit = pick(("epochs", "batch_size", "lr", "min_delta", "restore_best_weights", "seed", "verbose"))
    if "patience" in kw:
        fit["patience"] = _patience(kw["patience"])
    return TrialSpec(data=data, model=ModelSpec(**pick(MODEL_OPTION_NAMES)), fit=FitSpec(**fit))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlflow-dl")
@click.option("--verbose", "verbose_logs", is_flag=True,
              help="Also show TensorFlow's start-up lines and MLflow's INFO lines (or MLFLOW_DL_VERBOSE=1).")
def cli(verbose_logs):
    """Run, track, compare and ship Keras experiments on MLflow.

    Runs go to MLFLOW_TRACKING_URI (default: sqlite:///mlflow.db in this folder).
    """
    from mlflow_dl import quiet

    if verbose_logs:
        os.environ[quiet.VERBOSE_ENV] = "1"
    quiet.own_process()


MODEL_OPTION_NAMES = ("hidden", "activation", "l1", "l2", "reg_layers", "dropout")


def model_options(f):
    for option in reversed([
        click.option("--hidden", default="128,64,32", show_default=True, help="Hidden layer sizes."),
        click.option("--activation", default="relu", show_default=True),
        click.option("--l1", default=0.0, show_default=True, type=float),
        click.option("--l2", default=0.0, show_default=True, type=float),
        click.option("--reg-layers", default="all", show_default=True, type=click.Choice(["all", "widest"]),
                     help="Regularise every hidden layer or only the widest."),
        click.option("--dropout", default=0.0, show_default=True, type=float, help="Rate after each hidden layer."),
    ]):
        f = option(f)
    return f


@cli.command()
@data_options
@fit_options
@model_options
@click.option("--run-name", default=None)
@trains_offline
def train(run_name, **kw):
    """Fit one MLP and track it: metrics per epoch, best epoch, checkpoint, plots, model."""
    spec = build_spec(kw)
    _quiet_tensorflow()
    from mlflow_dl.families.train import train as train_fn

    result = train_fn(spec, experiment=kw["experiment"], name=run_name)
    click.echo(_describe(result))


@cli.command(name="main")
@click.option("--epochs", default=30, show_default=True, type=int)
@click.option("--experiment", default=None, help="MLflow experiment name (default: mlflow-dl).")
@trains_offline
def main_job(epochs, experiment):
    """The lesson, end to end, on the bundled data sets."""
    _quiet_tensorflow()
    from mlflow_dl.lesson import run_lesson

    run_lesson(epochs=epochs, experiment=experiment, echo=click.echo)


@cli.command()
@click.option("--experiment", required=True, help="Experiment whose FINISHED runs compete.")
@click.option("--model-name", required=True, help="Registered model name.")
@click.option("--parent-run-id", default=None, help="Only the children of this sweep run.")
@click.option("--dataset", default=None, help="Only runs on this data set (e.g. breast_cancer).")
@click.option("--key", default=None, help="Only runs of this comparability key (tag mlflow_dl.comparability_key).")
@click.option("--alias", default="champion", show_default=True)
@click.option("--min-improvement", default=0.0, show_default=True, type=float,
              help="The alias moves only if model_val_loss improves by more than this.")
@click.option("--allow-signature-change", is_flag=True, help="Promote even if the input columns changed.")
@click.option("--allow-key-change", is_flag=True, help="Promote a run of another comparability key than the champion's.")
@needs_server("promote", "rank the runs and register the winner")
def promote(experiment, model_name, parent_run_id, dataset, key, alias, min_improvement, allow_signature_change,
            allow_key_change):
    """Register the run with the lowest model_val_loss (one comparability key) and point the alias at it."""
    _quiet_tensorflow()
    from mlflow_dl.registry import promote as promote_fn
    from mlflow_dl.serving import ServeSpec, shell_command

    result = promote_fn(experiment, model_name, parent_run_id=parent_run_id or None, alias=alias,
                        min_improvement=min_improvement, allow_signature_change=allow_signature_change,
                        dataset=dataset or None, key=key or None, allow_key_change=allow_key_change)
    click.echo(result.message)
    click.echo(f"serve: {shell_command(ServeSpec(model_name, alias))}")


@cli.command()
@click.option("--model-name", required=True, help="Registered model name.")
@click.option("--alias", default="champion", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5001, show_default=True, type=int)
@needs_server("serve", "resolve models:/NAME@ALIAS in the model registry")
def serve(model_name, alias, host, port):
    """Serve NAME@ALIAS with `mlflow models serve --env-manager local` (Ctrl-C stops it)."""
    from mlflow_dl.serving import ServeSpec, check_registered, serve as serve_fn, shell_command

    spec = ServeSpec(model_name, alias, host, port)
    check_registered(spec)
    click.echo(shell_command(spec), err=True)
    sys.exit(serve_fn(spec))


@cli.command()
@click.option("--backend-store-uri", default="sqlite:///mlflow.db", show_default=True,
              help="sqlite:///FILE (embedded) or postgresql://USER@HOST:PORT/DB (team).")
@click.option("--artifacts-destination", default="./mlartifacts", show_default=True,
              help="Where the server keeps artifacts (clients upload through it).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Another address needs --app-name basic-auth.")
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--app-name", default=None, type=click.Choice(["basic-auth"]),
              help="Users and permissions; refuses to start while the admin password is the default.")
@click.option("--allowed-hosts", default="", help="Comma list of Host names clients use; no wildcard.")
@click.option("--workers", default=1, show_default=True, type=int)
def server(backend_store_uri, artifacts_destination, host, port, app_name, allowed_hosts, workers):
    """Start the tracking server: embedded SQLite by default, PostgreSQL + basic-auth for a team."""
    from mlflow_dl.server import ServerSpec, command, serve as serve_fn

    spec = ServerSpec(backend_store_uri, artifacts_destination, host, port, app_name,
                      tuple(h.strip() for h in allowed_hosts.split(",") if h.strip()), workers)
    click.echo(" ".join(command(spec)), err=True)
    sys.exit(serve_fn(spec))


@cli.command()
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


@cli.command()
@click.argument("run_id")
@needs_server("resume", "read the run and log the rest of its fit into it")
def resume(run_id):
    """Continue a killed run from its last completed epoch, in the same run."""
    _quiet_tensorflow()
    from mlflow_dl.training.resume import resume as resume_fn

    click.echo(_describe(resume_fn(run_id)))


@cli.command()
@click.option("--older-than", default="30m", show_default=True, help="Heartbeat age: 45s, 30m, 2h, 1d.")
@click.option("--experiment", default=None, help="Only this experiment (default: all).")
@needs_server("reap", "find the runs left RUNNING and end them")
def reap(older_than, experiment):
    """End KILLED the runs left RUNNING without a heartbeat for longer than --older-than."""
    from mlflow_dl.training.resume import parse_age, reap as reap_fn

    reaped = reap_fn(parse_age(older_than), experiment)
    for run_id in reaped:
        click.echo(f"run {run_id}: KILLED")
    click.echo(f"{len(reaped)} runs reaped")


SWEEP_GRIDS = {
    # family: (grid options, base options they replace)
    "regularization": ([click.Option(["--kind"], default="l1", show_default=True, type=click.Choice(["l1", "l2", "both"])),
                        click.Option(["--strengths"], help="Comma list (default: log grid, L1 1e-4..1e-1, L2 1e-3..5e-1)."),
                        click.Option(["--layers"], default="all", show_default=True, type=click.Choice(["all", "widest"]),
                                     help="Regularise every hidden layer or only the widest.")],
                       {"l1", "l2", "reg_layers"}),
    "dropout": ([click.Option(["--rates"], help="Comma list (default: 0,0.2,0.3,0.4,0.5).")], {"dropout"}),
    "capacity": ([click.Option(["--layers"], help="Comma list of hidden-layer counts (default: 1,2,3,4)."),
                  click.Option(["--nodes"], help="Comma list of nodes per layer (default: 8,32,128,256).")], {"hidden"}),
    "early_stopping": ([click.Option(["--patience"], help="Comma list (default: 0,2,5,10)."),
                        click.Option(["--min-delta"], help="Comma list (default: 0,0.001,0.005)."),
                        click.Option(["--restore"], default="on,off", show_default=True,
                                     help="restore_best_weights: on, off or both.")],
                       {"patience", "min_delta", "restore_best_weights"}),
    "learning_rate": ([click.Option(["--lrs"], help="Comma list (default: 0.1,0.01,0.001,0.0001).")], {"lr"}),
    "data_size": ([click.Option(["--fractions"], help="Comma list of training-row fractions (default: 0.1,0.25,0.5,1).")],
                  set()),
    "multi_input": ([click.Option(["--groups"], help="Feature groups: ';' between groups, ',' between column names or "
                                                  "globs, optional name=, e.g. 'mean *;worst *;* error'; or auto, "
                                                  "auto:N (default: auto = 3 blocks)."),
                     click.Option(["--branch-units"], help="Comma list of Dense units per branch (default: 8,32).")],
                    set()),
    "pca": ([click.Option(["--components"], help="Comma list of PCA component counts and/or raw (default: 2,5,10,raw).")],
            set()),
}


@cli.group(cls=click.Group)
def sweep():
    """Run a family of trials as one parent run with a nested child per trial."""


def _sweep_command(family: str) -> click.Command:
    grid_options, replaced = SWEEP_GRIDS[family]
    if "restore_best_weights" in replaced:
        replaced = replaced | {"restore_best_weights", "no_restore_best_weights"}

    @data_options
    @fit_options
    @model_options
    @click.option("--workers", default=1, show_default=True, type=int, help="Processes that take trials: this one and N-1 local workers.")
    @click.option("--executor", default=None, type=click.Choice(["inline", "processes", "ray"]),
                  help="Where trials run (default: inline, or processes with --workers > 1); ray needs mlflow-dl[ray].")
    @click.option("--ray-address", default="auto", show_default=True, help="auto or ray://HOST:PORT.")
    @prune_options
    @trains_offline
    def command(workers, executor, ray_address, **kw):
        prune = prune_spec(kw)
        grid = {o.name: kw.pop(o.name) for o in grid_options}
        spec = build_spec(kw)
        _quiet_tensorflow()
        from mlflow_dl.families import sweep as run_sweep

        result = run_sweep(family, data=spec.data, model=spec.model, fit=spec.fit, workers=workers,
                           executor=executor, ray_address=ray_address, prune=prune,
                           experiment=kw["experiment"], **grid)
        click.echo(f"parent run {result.parent_run_id}: {len(result.table)} trials, best run {result.best_run_id}")
        click.echo(result.table.drop(columns=["run_id", "error"]).to_string(index=False))

    cmd = click.command(name=family, help=f"{_question(family)} (a parent run, a child per trial)")(command)
    replaced_flags = {f"--{n.replace('_', '-')}" for n in replaced}
    cmd.params = [p for p in cmd.params if not set(p.opts) & replaced_flags] + grid_options
    return cmd


def _question(family: str) -> str:
    return {
        "regularization": "How strong should L1/L2 be?", "dropout": "How much dropout?",
        "capacity": "How big a network?", "early_stopping": "When to stop?",
        "learning_rate": "Which learning rate?", "data_size": "Do more training rows help?",
        "multi_input": "Do separate input branches help?", "pca": "How many PCA components?",
    }[family]


for _family in SWEEP_GRIDS:
    sweep.add_command(_sweep_command(_family))


@cli.command(name="rnn-vs-lstm")
@click.option("--dataset", default="sunspots", show_default=True, help="co2, macrodata, sunspots, or a CSV path.")
@click.option("--target", default=None, help="Column to forecast (default: the bundled series' own).")
@click.option("--date-column", default=None, help="Date column of a CSV.")
@click.option("--cells", default="rnn,lstm", show_default=True, help="Comma list of rnn, lstm, gru.")
@click.option("--timesteps", default="4,8,16", show_default=True, help="Comma list of window lengths.")
@click.option("--units", default="8,8", show_default=True, help="Units per recurrent layer.")
@click.option("--flatten/--no-flatten", default=False, show_default=True,
              help="Last layer returns sequences + Flatten, instead of its final state.")
@click.option("--activation", default="tanh", show_default=True)
@click.option("--horizon", default=1, show_default=True, type=int, help="Predict this many rows ahead.")
@click.option("--season", default="", help="Season length in rows (0: none; default: the frequency's: "
              "daily 7, weekly 52, monthly 12, quarterly 4, hourly 24, yearly none).")
@click.option("--resample", default=None, help="Aggregate to this pandas frequency (D, W, MS, QS, ...).")
@click.option("--interpolate", type=click.BOOL, default=False, is_flag=False, flag_value=True,
              help="Fill gaps and missing values: in time inside the training part, the last value carried "
              "forward after it (`--interpolate`, or `--interpolate true|false`).")
@click.option("--scaler", default="minmax", show_default=True, type=click.Choice(["minmax", "standard"]))
@click.option("--scale-y/--no-scale-y", default=True, show_default=True, help="Standardise the target on train.")
@click.option("--val-fraction", default=0.15, show_default=True, type=float)
@click.option("--test-fraction", default=0.15, show_default=True, type=float)
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="Processes that take trials: this one and N-1 local workers.")
@click.option("--experiment", default=None, help="MLflow experiment name (default: mlflow-dl).")
@fit_options
@prune_options
@trains_offline
def rnn_vs_lstm(cells, timesteps, workers, experiment, **kw):
    """Which recurrent cell, how long a window? (a parent run, a child per cell x timesteps)"""
    from mlflow_dl.config import FitSpec, parse_list
    from mlflow_dl.data.series import SeriesSpec
    from mlflow_dl.models.recurrent import RecurrentSpec

    season = parse_list(kw["season"], int, "season")
    data = SeriesSpec(**{k: kw[k] for k in ("dataset", "horizon", "interpolate", "scaler", "scale_y",
                                            "val_fraction", "test_fraction", "seed")},
                      target=kw["target"] or None, date_column=kw["date_column"] or None,
                      resample=kw["resample"] or None, season=season[0] if season else None)
    model = RecurrentSpec(units=kw["units"], activation=kw["activation"], flatten=kw["flatten"])
    fit = FitSpec(**{k: kw[k] for k in ("epochs", "batch_size", "lr", "min_delta", "restore_best_weights",
                                        "seed", "verbose")}, patience=_patience(kw["patience"]))
    _quiet_tensorflow()
    from mlflow_dl.families.rnn_vs_lstm import run

    result = run(data, model, fit, cells=cells, timesteps=timesteps, workers=workers, experiment=experiment,
                 prune=prune_spec(kw))
    click.echo(f"parent run {result.parent_run_id}: best run {result.best_run_id}")
    columns = [c for c in ("rank", "trial", "approach", "test_mae", "test_rmse", "test_mase", "model_val_loss", "status")
               if c in result.table]
    click.echo(result.table[columns].to_string(index=False))


sweep.add_command(rnn_vs_lstm, name="rnn_vs_lstm")


@sweep.command(name="custom")
@click.option("--model", "model_ref", required=True,
              help="Your model-building function: package.module:function (importable from here) or file.py:function.")
@click.option("--grid", required=True, help="Its arguments' values, crossed: 'dropout=0,0.2,0.4;l2=0.001,0.01'.")
@click.option("--data", required=True, help="A CSV path (or breast_cancer, diabetes, digits).")
@click.option("--target", default=None, help="Target column (required for a CSV).")
@click.option("--task", default="auto", show_default=True, type=click.Choice(["auto", "binary", "multiclass", "regression"]))
@click.option("--scaler", default="minmax", show_default=True, type=click.Choice(["minmax", "standard"]))
@click.option("--epochs", default=20, show_default=True, type=int)
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--patience", default="none", show_default=True, help="Early-stopping patience, or 'none'.")
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="Processes that take trials: this one and N-1 local workers.")
@click.option("--executor", default=None, type=click.Choice(["inline", "processes", "ray"]))
@click.option("--ray-address", default="auto", show_default=True, help="auto or ray://HOST:PORT.")
@click.option("--experiment", default=None, help="MLflow experiment name (default: mlflow-dl).")
@prune_options
def custom_sweep(model_ref, grid, data, target, patience, **kw):
    """Which values of your own model's arguments are best? (a parent run, a child per grid point)"""
    prune = prune_spec(kw)
    _quiet_tensorflow()
    from mlflow_dl.families.custom import sweep_model

    result = sweep_model(model_ref, grid, data, target or None, patience=_patience(patience), prune=prune, **kw)
    click.echo(f"parent run {result.parent_run_id}: {len(result.table)} trials, best run {result.best_run_id}")
    click.echo(result.table.drop(columns=["run_id", "error"]).to_string(index=False))


@cli.command()
@click.argument("parent_run_id")
@click.option("--trials", default=4, show_default=True, type=int,
              help="New trials, spread between the best's neighbours on each numeric axis (crossed).")
@click.option("--data", default=None, help="The coarse sweep's CSV again, when it moved (its digest must match).")
@click.option("--target", default=None, help="Target column of --data.")
@click.option("--workers", default=1, show_default=True, type=int, help="Processes that take trials: this one and N-1 local workers.")
@click.option("--executor", default=None, type=click.Choice(["inline", "processes", "ray"]))
@click.option("--ray-address", default="auto", show_default=True, help="auto or ray://HOST:PORT.")
@prune_options
@needs_server("refine", "read the coarse sweep and log the refined one beside it")
def refine(parent_run_id, trials, data, target, **kw):
    """Refine a sweep near its best: a new parent (tag mlflow_dl.refines) with trials between the best's neighbours."""
    prune = prune_spec(kw)
    _quiet_tensorflow()
    from mlflow_dl.refinement import refine as refine_fn

    result = refine_fn(parent_run_id, trials=trials, data=data or None, target=target or None, prune=prune,
                       echo=click.echo, **kw)
    click.echo(f"parent run {result.parent_run_id} refines {parent_run_id}: {len(result.table)} trials "
               f"(the coarse ones linked), best run {result.best_run_id}")
    click.echo(result.table.drop(columns=["run_id", "error"]).to_string(index=False))


@cli.command()
@click.argument("run_id")
@needs_server("diagnose", "read the run's residuals and log the diagnostics")
def diagnose(run_id):
    """Residual diagnostics of a time-series run: ACF/PACF, ADF, KPSS, Shapiro-Wilk, Ljung-Box, Goldfeld-Quandt."""
    from mlflow_dl.training.diagnostics import diagnose as diagnose_fn, is_white_noise

    metrics = diagnose_fn(run_id)
    for key, value in metrics.items():
        click.echo(f"{key} = {value:.4g}")
    click.echo(f"residuals_white_noise = {str(is_white_noise(metrics)).lower()}")


@cli.command()
@data_options
@click.option("--tuner", default="random", show_default=True, type=click.Choice(["random", "grid", "bayesian", "hyperband"]))
@click.option("--model", default="mlp", show_default=True, type=click.Choice(["mlp", "recurrent"]),
              help="recurrent: cell, units and window length on a time series (e.g. --dataset sunspots).")
@click.option("--date-column", default=None, help="Date column of a CSV time series (--model recurrent).")
@click.option("--max-trials", default=10, show_default=True, type=int)
@click.option("--epochs", default=10, show_default=True, type=int, help="Epochs per trial (Hyperband: the most a trial gets).")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--space", default=None, help="YAML/JSON file overriding the default search space key by key.")
@click.option("--search-id", default=None, help="Names the search; the same id resumes it (default: a new one).")
@click.option("--directory", default="keras_tuner", show_default=True, help="Where keras-tuner keeps its state.")
@click.option("--allow-remote-oracle", is_flag=True,
              help="Accept a non-loopback KERASTUNER_ORACLE_IP (its gRPC service has no authentication).")
@prune_options
@trains_offline
def tune(tuner, model, date_column, max_trials, epochs, batch_size, space, search_id, directory, allow_remote_oracle,
         **kw):
    """Let keras-tuner search: a parent run per search, a child per trial."""
    prune = prune_spec(kw)
    if model == "recurrent":
        from mlflow_dl.data.series import SeriesSpec

        data = SeriesSpec(kw["dataset"], target=kw["target"] or None, date_column=date_column or None, seed=kw["seed"])
    else:
        data = build_spec(kw).data
    if offline() and (search_id or os.environ.get("KERASTUNER_TUNER_ID")):
        raise ServerUnreachable("the tracking server does not answer, and a named or distributed search "
                                "(--search-id, KERASTUNER_TUNER_ID) finds its parent run there; start it and run "
                                "the command again, or tune without --search-id")
    from mlflow_dl.sweeps.search_plan import plan_search

    plan = plan_search(data, tuner=tuner, model=model, max_trials=max_trials, epochs=epochs, space=space or None,
                       search_id=search_id or None, batch_size=batch_size, allow_remote_oracle=allow_remote_oracle)
    _quiet_tensorflow()
    from mlflow_dl.sweeps.tuning import run_search  # keras-tuner, TensorFlow: once the search is usable

    result = run_search(plan, experiment=kw["experiment"], directory=directory, echo=click.echo, prune=prune)
    click.echo(f"search {result.search_id} ({result.role}): parent run {result.parent_run_id}, "
               f"{len(result.table)} trials, best run {result.best_run_id}")


def _describe(result) -> str:
    m = result.metrics
    tests = ", ".join(f"{k}={v:.4g}" for k, v in m.items() if k.startswith("test_"))
    return (f"run {result.run_id} {result.status}: best_val_loss={m.get('best_val_loss', float('nan')):.4g} "
            f"at epoch {m.get('best_epoch')}; {tests}")


def main(argv=None) -> None:
    """Entry point: one-line errors with exit code 2, no tracebacks for user mistakes."""
    from urllib.parse import urlsplit

    if urlsplit(os.environ.get("MLFLOW_TRACKING_URI", "")).password:  # MLflow would print "View run at <uri>"
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
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


def program() -> None:
    """The `mlflow-dl` program (console script, `python -m mlflow_dl`): main(), then exit as Python
    would, minus the interpreter's teardown. With TensorFlow, MLflow and pandas loaded, freeing every
    module and object one by one takes seconds after the work is done, on every command. For the same
    reason, what a sweep or fit freezes out of garbage collection stays frozen (heap.for_good)."""
    from mlflow_dl.runtime import heap, process

    process.own()  # this process is mlflow-dl's: it may tune the heap and TensorFlow for its fits
    heap.importing()
    heap.for_good()
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    if not isinstance(code, int):  # sys.exit("message") or sys.exit(None), as Python treats them
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    threading._shutdown()  # Python's first step at exit: thread pools wind down, other threads are joined
    atexit._run_exitfuncs()  # its second: atexit handlers (MLflow's, Ray's, logging's)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
