"""What the parent of a sweep shows: the results table, the comparison plots, the knee."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from mlflow_dl.sweeps.trial_specs import Axis, Trial


def results_table(trials: list[Trial], results: list) -> pd.DataFrame:
    """One row per trial: swept values, model_val_loss (what ranks), best_val_loss, best_epoch, train
    loss there, test metrics, status, epochs trained and the epoch a pruner stopped the trial at (NaN: not pruned)."""
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
            "epochs_trained": len(result.history.get("loss", ())),
            "pruned_at_epoch": math.nan if getattr(result, "pruned_at_epoch", None) is None else result.pruned_at_epoch,
            "fit_seconds": m.get("fit_seconds", math.nan),
            "error": result.error or "",
            "run_id": result.run_id,
        })
    return pd.DataFrame(rows)


def best_row(table: pd.DataFrame) -> pd.Series | None:
    """The row with the lowest model_val_loss (the logged model's own validation loss); ties go to
    fewer params, then to the earlier row; a pruned trial only when no other has a finite one. None when no
    row has a finite one."""
    values = pd.to_numeric(table["model_val_loss"], errors="coerce") if "model_val_loss" in table else None
    if values is None or not np.isfinite(values).any():
        return None
    ranked = table.assign(_value=values, _params=pd.to_numeric(table["total_params"], errors="coerce")
                          if "total_params" in table else math.nan,
                          _row=np.arange(len(table)),
                          _pruned=pd.to_numeric(table["pruned_at_epoch"], errors="coerce").notna()
                          if "pruned_at_epoch" in table else False)
    ranked = ranked[np.isfinite(ranked["_value"])].sort_values(["_pruned", "_value", "_params", "_row"],
                                                               na_position="last")
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

    from mlflow_dl.fit import plots

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
        cut = _pruned(done)
        if len(cut):
            ax.plot(cut[axis.key], cut["best_val_loss"], "x", color="red", markersize=9, label="pruned (stop epoch)")
            for _, row in cut.iterrows():
                ax.annotate(f"pruned@{int(row['pruned_at_epoch'])}", (row[axis.key], row["best_val_loss"]),
                            fontsize=7, color="red", xytext=(3, 3), textcoords="offset points")
        if axis.log:
            ax.set_xscale("log")
            # plain tick labels (0.001, not 10^-3): no mathtext, whose parser is slow to set up
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        if axis.knee:
            k = knee(_x(curve, axis), curve["best_val_loss"], axis.knee)
            if k is not None:
                # the swept value at the elbow, exactly (10**log10(65) would log 64.99999999999999)
                knee_value = float(curve[axis.key].astype(float).iloc[int(np.argmin(np.abs(_x(curve, axis) - k)))])
                ax.axvline(knee_value, color="red", linestyle="--", label=f"knee {knee_value:.3g}")
        ax.set_xlabel(axis.label)
    else:
        cut = _pruned(done)
        bars = ax.bar(done["trial"], done["best_val_loss"], label="validation loss (best)")
        for bar, trial in zip(bars, done["trial"]):
            if trial in set(cut["trial"]):  # pruned: hatched, its stop epoch on top
                pruned_at = cut[cut["trial"] == trial]["pruned_at_epoch"].iloc[0]
                bar.set_hatch("//")
                bar.set_alpha(0.5)
                ax.annotate(f"pruned@{int(pruned_at)}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            fontsize=6, color="red", ha="center", va="bottom")
        if len(cut):
            bars[0].set_label("validation loss (best); hatched: pruned")
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
    stops = {}
    if "pruned_at_epoch" in table:
        stops = {row["trial"]: int(row["pruned_at_epoch"]) for _, row in _pruned(table).iterrows()}
    for name, history in histories.items():
        if "val_loss" in history:
            if name in stops:  # dashed, ending in a cross at the epoch the pruner stopped it
                line, = ax.plot(history["val_loss"], "--", label=f"{name} (pruned at {stops[name]})")
                ax.plot(len(history["val_loss"]) - 1, history["val_loss"][-1], "x", color=line.get_color())
            else:
                ax.plot(history["val_loss"], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val_loss")
    ax.set_title("validation loss of every trial")
    ax.legend(fontsize=7, ncol=2, loc="upper right")  # the curves fall: loc="best" would measure them all
    plots.fixed_margins(fig)
    figures["plots/val_loss_curves.png"] = fig
    return figures, knee_value


def _pruned(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of pruned trials."""
    if "pruned_at_epoch" not in table:
        return table.iloc[:0]
    return table[pd.to_numeric(table["pruned_at_epoch"], errors="coerce").notna()]


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
