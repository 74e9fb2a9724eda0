"""Many trials under one parent run: `sweep <family>` (the lesson's families, `custom` for your own model),
`rnn-vs-lstm`, `refine` a finished sweep near its best, and `tune` with keras-tuner."""

from __future__ import annotations

import os

import click

from mlflow_dl.cli.common import (build_spec, data_options, fit_options, model_options, parse_patience, prune_options,
                                  prune_spec, quiet_tensorflow)
from mlflow_dl.delivery.outage import ServerUnreachable, needs_server, offline, trains_offline

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


@click.group(cls=click.Group)
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
        quiet_tensorflow()
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


@click.command(name="rnn-vs-lstm")
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
                                        "seed", "verbose")}, patience=parse_patience(kw["patience"]))
    quiet_tensorflow()
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
    quiet_tensorflow()
    from mlflow_dl.families.custom import sweep_model

    result = sweep_model(model_ref, grid, data, target or None, patience=parse_patience(patience), prune=prune, **kw)
    click.echo(f"parent run {result.parent_run_id}: {len(result.table)} trials, best run {result.best_run_id}")
    click.echo(result.table.drop(columns=["run_id", "error"]).to_string(index=False))


@click.command()
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
    quiet_tensorflow()
    from mlflow_dl.refinement import refine as refine_fn

    result = refine_fn(parent_run_id, trials=trials, data=data or None, target=target or None, prune=prune,
                       echo=click.echo, **kw)
    click.echo(f"parent run {result.parent_run_id} refines {parent_run_id}: {len(result.table)} trials "
               f"(the coarse ones linked), best run {result.best_run_id}")
    click.echo(result.table.drop(columns=["run_id", "error"]).to_string(index=False))


@click.command()
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
    quiet_tensorflow()
    from mlflow_dl.sweeps.tuning import run_search  # keras-tuner, TensorFlow: once the search is usable

    result = run_search(plan, experiment=kw["experiment"], directory=directory, echo=click.echo, prune=prune)
    click.echo(f"search {result.search_id} ({result.role}): parent run {result.parent_run_id}, "
               f"{len(result.table)} trials, best run {result.best_run_id}")

