"""Figures a run carries: learning curves, confusion matrix, predicted vs actual.

Every figure is a `matplotlib.figure.Figure` drawn by the Agg canvas, outside pyplot: matplotlib's
backend (the user's choice) is never switched and pyplot's list of open figures never grows.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(figsize=None) -> Figure:
    """A figure on its own Agg canvas; it goes with its last reference (nothing to close)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def subplots(nrows: int = 1, ncols: int = 1, figsize=None, **kwargs):
    """(figure, axes) as `pyplot.subplots` returns them, on a `new_figure`."""
    fig = new_figure(figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _warm_up() -> None:
    """Render one tiny figure now: matplotlib's first text and PNG carry one-off set-up
    (fonts, caches) that would otherwise land in the first fit's end, on the training process's GIL."""
    fig, ax = subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1], label="0")
    ax.set_title("0")
    ax.legend(loc="upper right", fontsize=8)
    fig.savefig(io.BytesIO(), format="png", dpi=20)


_warm_up()


def fixed_margins(fig, left: float = 0.75, bottom: float = 0.6, top: float = 0.4, right: float = 0.2) -> None:
    """Margins in inches, for figures whose labels have a known size: tight_layout measures every
    tick label first, a third of a small figure's cost (sweeps draw one per trial)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height)


def learning_curves(history: dict[str, list[float]], best_epoch: int | None = None):
    """One panel per metric, train against validation, like the lecture's history plot (one value
    per epoch in each list; NaN where an epoch has none).

    Fixed margins, and the legend in the corner the curves leave free: tight_layout and loc="best"
    measure every label first, a third of the figure's cost at the end of every fit.
    """
    names = [k for k in history if not k.startswith("val_")]
    width, height = 4.2 * len(names), 3.4
    fig, axes = subplots(1, len(names), figsize=(width, height), squeeze=False)
    fixed_margins(fig, left=0.6, bottom=0.5, top=0.3, right=0.15)
    fig.subplots_adjust(wspace=0.7 * len(names) / width)
    for ax, name in zip(axes[0], names):
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            if key in history:  # epochs without a value (validation_freq > 1: NaN) are left out
                values = np.asarray(history[key], dtype=float)
                ok = np.isfinite(values)
                ax.plot(np.arange(len(values))[ok], values[ok], label=f"{label} {name}")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        falling = history[name][-1] <= history[name][0]  # a loss or error: the curves leave the top right free
        ax.legend(fontsize=8, loc="upper right" if falling else "lower right")
    return fig


_confusion: dict = {}  # class names -> the sklearn display of a kept confusion-matrix figure


def confusion_matrix(y_true, y_pred, labels):
    """The test split's counts by true and predicted class, counts in full.

    One figure per set of class names is kept and redrawn with each call's counts: building its
    axes and ticks again would be a third of its cost, paid by every trial of a sweep.
    """
    from sklearn.metrics import ConfusionMatrixDisplay
    from sklearn.metrics import confusion_matrix as count

    names = tuple(str(c) for c in labels)
    cm = count(y_true, y_pred, labels=list(range(len(names))))
    display = _confusion.get(names)
    if display is None:
        fig = new_figure((4.5, 4.5))
        display = ConfusionMatrixDisplay(cm, display_labels=list(names)).plot(
            ax=fig.add_subplot(), colorbar=False, values_format="d")
        display.ax_.set_title("test confusion matrix")
        fixed_margins(fig, left=0.55 + 0.075 * max(map(len, names)))
        _confusion[names] = display
        return fig
    # as sklearn draws it: dark text on light cells, light text on dark ones
    display.im_.set_data(cm)
    display.im_.set_clim(cm.min(), cm.max())
    middle, dark, light = (cm.max() + cm.min()) / 2, display.im_.cmap(1.0), display.im_.cmap(0)
    for text, value in zip(display.text_.ravel(), cm.ravel()):
        text.set_text(format(value, "d"))
        text.set_color(dark if value < middle else light)
    return display.figure_


def predicted_vs_actual(y_true, y_pred):
    fig, ax = subplots(figsize=(4.5, 4.5))
    ax.scatter(y_true, y_pred, s=10, alpha=0.6)
    lo, hi = float(np.min([y_true, y_pred])), float(np.max([y_true, y_pred]))
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title("test: predicted vs actual")
    fixed_margins(fig)
    return fig


def close(fig) -> None:
    """Nothing to do: these figures live outside pyplot and go with their last reference."""


def scree(ratio, cumulative, elbow: int | None, for_variance: dict[float, int]):
    """Explained-variance ratio per component (bars) and its cumulative sum, elbow and 90/95/99% marked."""
    k = np.arange(1, len(ratio) + 1)
    fig, ax = subplots(figsize=(6.5, 4))
    ax.bar(k, ratio, color="tab:blue", alpha=0.7, label="explained variance ratio")
    ax.plot(k, cumulative, "o-", color="tab:orange", markersize=3, label="cumulative")
    if elbow is not None:
        ax.axvline(elbow, color="red", linestyle="--", label=f"elbow: {elbow} components")
    for target, n in for_variance.items():
        ax.axhline(target, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"{target:.0%}: {n}", (len(k), target), ha="right", va="bottom", fontsize=7)
    ax.set_xlabel("principal component")
    ax.set_ylabel("share of variance")
    ax.set_title("PCA scree plot (scaled training rows)")
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    return fig


def embedding(xy, y, classes=None, title: str = "t-SNE of the training rows"):
    """2-D points coloured by class (a legend) or by a continuous target (a colour bar)."""
    fig, ax = subplots(figsize=(5.5, 4.5))
    if classes is not None:
        for code, label in enumerate(classes):
            mask = np.asarray(y) == code
            ax.scatter(xy[mask, 0], xy[mask, 1], s=8, alpha=0.7, label=str(label))
        ax.legend(fontsize=7, markerscale=2, title="class")
    else:
        points = ax.scatter(xy[:, 0], xy[:, 1], c=y, s=8, alpha=0.7, cmap="viridis")
        fig.colorbar(points, ax=ax, label="target")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig
