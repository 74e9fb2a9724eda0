"""Figures of a time-series run: the target's profile, the forecast over time, approaches ranked."""

from __future__ import annotations

import numpy as np

from mlflow_dl.fit import plots


def series_profile(y, bounds):
    """The raw target over time, with the validation and test parts shaded."""
    fig, ax = plots.subplots(figsize=(9, 3.6))
    ax.plot(y.index, y.to_numpy(), linewidth=1)
    ax.axvspan(bounds[0], bounds[1], color="orange", alpha=0.15, label="validation")
    ax.axvspan(bounds[1], y.index[-1], color="red", alpha=0.12, label="test")
    ax.set_title(f"{y.name}: the series (train, validation, test)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def forecast(dates, actual, predicted: dict):
    """Actual against each forecast over the test span."""
    fig, ax = plots.subplots(figsize=(9, 3.6))
    ax.plot(dates, actual, color="black", linewidth=1.5, label="actual")
    for name, values in predicted.items():
        ax.plot(dates, values, linewidth=1, linestyle="--" if name == "persistence" else "-", label=name)
    ax.set_title("test span: actual vs predicted")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", rotation=30, labelsize=7)
    fig.tight_layout()
    return fig


def ranking(names, mae, approaches, persistence_mae: float):
    """Test MAE of every approach, best first, persistence as the line to beat."""
    colours = {"naive": "grey", "statistical": "tab:green", "machine learning": "tab:orange",
               "deep learning": "tab:blue"}
    fig, ax = plots.subplots(figsize=(7, 0.35 * len(names) + 1.5))
    y = np.arange(len(names))[::-1]
    ax.barh(y, mae, color=[colours.get(a, "tab:blue") for a in approaches])
    ax.set_yticks(y, [str(n) for n in names], fontsize=8)
    ax.axvline(persistence_mae, color="red", linestyle="--", linewidth=1, label="persistence")
    ax.set_xlabel("test MAE (original scale)")
    ax.set_title("naive, statistical, machine learning, deep learning")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
