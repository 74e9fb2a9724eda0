"""What the parent of a sweep shows: the results table, the comparison plots, the knee."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from mlflow_dl.sweeps.trial_specs import Axis, Trial


def results_table(trials: list[Trial], results: list) -> pd.DataFrame:
    """One row per trial: swept values, model_val_loss (what ranks), best_val_loss, best_epoch, train
    loss there, test metrics, status."""
    rows = []
    for trial, result in zip(trials, results):
        m = result.metrics
        rows.append({
            "trial": trial.name, **trial.values,
            "model_val_loss": m.get("model_val_loss", math.nan),
            "best_val_loss": m.get("best_val_loss", math.nan),
            "best_epoch": m.get("best_epoch", math.nan),
            "train_loss_at_best": m.get("best_epoch_loss", math.nan),
            **{k: v for k, v in m.items() if k.startswith("test_")},
            "total_params": m.get("total_params", math.nan),
            "status": result.status,
            "fit_seconds": m.get("fit_seconds", math.nan),
            "error": result.error or "",
            "run_id": result.run_id,
        })
    return pd.DataFrame(rows)


def best_row(table: pd.DataFrame) -> pd.Series | None:
    """The row with the lowest model_val_loss (the logged model's own validation loss); ties go to
    fewer params, then to the earlier row. None when no row has a finite one."""
    values = pd.to_numeric(table["model_val_loss"], errors="coerce") if "model_val_loss" in table else None
    if values is None or not np.isfinite(values).any():
        return None
    ranked = table.assign(_value=values, _params=pd.to_numeric(table["total_params"], errors="coerce")
                          if "total_params" in table else math.nan,
                          _row=np.arange(len(table)))
    ranked = ranked[np.isfinite(ranked["_value"])].sort_values(["_value", "_params", "_row"], na_position="last")
    return table.loc[ranked.index[0]]


def knee(x, y, direction: str) -> float | None:
    """The elbow of best_val_loss along x, by kneed's Kneedle (on log10 x for log axes)."""
    from kneed import KneeLocator

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return None
    order = np.argsort(x[ok])
    locator = KneeLocator(x[ok][order], y[ok][order], curve="convex", direction=direction)
    return None if locator.knee is None else float(locator.knee)


def _x(table: pd.DataFrame, axis: Axis):
    return np.log10(table[axis.key].astype(float)) if axis.log else table[axis.key].astype(float)


def comparison_figures(table: pd.DataFrame, histories: dict[str, dict], axis: Axis) -> tuple[dict, float | None]:
    """{artifact path: figure} and the knee (in the swept value's units) if the family has one."""
    from matplotlib import ticker

    from mlflow_dl.tracking import plots

    figures, knee_value = {}, None
    done = table[table["status"] == "FINISHED"]
    fig, ax = plots.subplots(figsize=(6.5, 4))
    numeric = axis.key is not None and len(done)  # else: a bar per trial, named on the x axis
    if numeric:
        curve = done.groupby(axis.key)[["train_loss_at_best", "best_val_loss"]].min().reset_index()
        ax.plot(curve[axis.key], curve["train_loss_at_best"], "o-", label="train loss (at best epoch)")
        ax.plot(curve[axis.key], curve["best_val_loss"], "o-", label="validation loss (best)")
        ax.fill_between(curve[axis.key], curve["train_loss_at_best"], curve["best_val_loss"], alpha=0.15,
                        label="train/validation gap")
        if axis.log:
            ax.set_xscale("log")
            # plain tick labels (0.001, not 10^-3): no mathtext, whose parser is slow to set up
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        if axis.knee:
            k = knee(_x(curve, axis), curve["best_val_loss"], axis.knee)
            if k is not None:
                knee_value = 10 ** k if axis.log else k
                ax.axvline(knee_value, color="red", linestyle="--", label=f"knee {knee_value:.3g}")
        ax.set_xlabel(axis.label)
    else:
        ax.bar(done["trial"], done["best_val_loss"], label="validation loss (best)")
        ax.plot(done["trial"], done["train_loss_at_best"], "o", color="black", label="train loss (at best epoch)")
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    ax.set_ylabel("loss")
    ax.set_title("bias and variance: train against validation loss")
    ax.legend(fontsize=8)
    if numeric:
        plots.fixed_margins(fig)
    else:  # trial names as rotated labels: their size decides the margin
        fig.tight_layout()
    figures["plots/loss_vs_swept_value.png"] = fig

    fig, ax = plots.subplots(figsize=(6.5, 4))
    for name, history in histories.items():
        if "val_loss" in history:
            ax.plot(history["val_loss"], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val_loss")
    ax.set_title("validation loss of every trial")
    ax.legend(fontsize=7, ncol=2, loc="upper right")  # the curves fall: loc="best" would measure them all
    plots.fixed_margins(fig)
    figures["plots/val_loss_curves.png"] = fig
    return figures, knee_value


def value_figures(table: pd.DataFrame, keys: list[str]) -> dict:
    """{plots/val_loss_vs_<key>.png: figure} for each key whose values are all numbers (a search's
    hyper-parameters, logged as text params): the family's loss-against-value plot, one per key,
    on a log axis when the positive values span more than two decades."""
    figures = {}
    for key in keys:
        values = pd.to_numeric(table[key], errors="coerce")
        if values.isna().any() or values.nunique() < 2:
            continue
        positive = values[values > 0]
        log = len(positive) == len(values) and positive.max() / positive.min() > 100
        axis = Axis(key=key, label=key, log=bool(log))
        with warnings.catch_warnings():  # the curves figure, unused here, has no curves to label
            warnings.simplefilter("ignore", UserWarning)
            figs, _ = comparison_figures(table.assign(**{key: values}), {}, axis)
        figs.pop("plots/val_loss_curves.png")
        figures[f"plots/val_loss_vs_{key}.png"] = figs["plots/loss_vs_swept_value.png"]
    return figures
