"""What several command modules share: the option sets, the specs built from them, TensorFlow's quiet
start and the line a fitted run prints. Only click is imported here; the rest inside the functions."""

from __future__ import annotations

import click


def quiet_tensorflow() -> None:
    """Keep a terminal readable (TF's C++ logs, retracing notes and MLflow's schema hints off), and
    claim TensorFlow's settings for this process (tf_runtime: Grappler off unless MLFLOW_DL_GRAPPLER=on)."""
    import logging
    import warnings

    from mlflow_dl.runtime import tf_runtime

    tf_runtime.own_process()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")


def parse_patience(value: str) -> int | None:
    """--patience: an integer, or none/off for no early stopping."""
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


def build_spec(kw: dict):
    """Specs from the options present; an option a sweep grid replaces keeps the spec's default."""
    from mlflow_dl.config import DataSpec, FitSpec, ModelSpec, TrialSpec

    def pick(names):
        return {n: kw[n] for n in names if n in kw}

    data = DataSpec(**pick(("dataset", "task", "scaler", "scale_y", "dropna", "seed")), target=kw.get("target") or None)
    fit = pick(("epochs", "batch_size", "lr", "min_delta", "restore_best_weights", "seed", "verbose"))
    if "patience" in kw:
        fit["patience"] = parse_patience(kw["patience"])
    return TrialSpec(data=data, model=ModelSpec(**pick(MODEL_OPTION_NAMES)), fit=FitSpec(**fit))
