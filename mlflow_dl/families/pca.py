"""How many PCA components? The MLP on k principal components against the raw features.

PCA is fitted on the scaled training rows only and travels in the run's
preprocessing, so a served PCA model still takes raw rows. The parent holds
the scree plot (elbow, components for 90/95/99% of the variance) and a t-SNE
picture of the training rows.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from mlflow_dl.config import TrialSpec
from mlflow_dl.data.reduction import check_components, parse_components, pca_splits
from mlflow_dl.sweeps.trial_specs import Axis, Trial

QUESTION = "How many principal components does the MLP need, and what does the reduction cost or gain?"
DEFAULT_COMPONENTS = "2,5,10,raw"
AXIS = Axis(key=None, label="features")
# t-SNE is quadratic in rows: a picture of a random subsample is enough. On so few rows the exact
# gradient with 500 iterations is faster than Barnes-Hut with the default 1,000 (measured: ten times faster
# for breast_cancer's 341 training rows, 2 busy cores) and the picture is the same kind.
TSNE_ROWS = 500
TSNE_ITERATIONS = 500


def trials(base: TrialSpec, components=None) -> list[Trial]:
    out = []
    for k in parse_components(components or DEFAULT_COMPONENTS):
        raw = k == "raw"
        out.append(Trial(name="raw" if raw else f"pca={k}", spec=base, values={"components": k},
                         prepare=None if raw else partial(pca_splits, n_components=k)))
    return out


def bind(trials: list[Trial], ds, splits) -> list[Trial]:
    """Every count within the number of features and of training rows (before any run starts)."""
    check_components([t.values["components"] for t in trials], splits.x_train.shape[1], len(splits.x_train))
    return trials


def tsne_picture(splits, seed: int):
    """t-SNE (2-D) of up to TSNE_ROWS training rows, coloured by class or by the target."""
    from sklearn.manifold import TSNE

    from mlflow_dl.fit import plots

    prep = splits.preprocessing
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.permutation(len(splits.x_train))[:TSNE_ROWS])
    x, y = splits.x_train[rows], splits.y_train[rows]
    xy = TSNE(n_components=2, perplexity=min(30.0, (len(rows) - 1) / 3), init="pca", method="exact",
              max_iter=TSNE_ITERATIONS, random_state=seed).fit_transform(x)
    if prep.task == "regression":
        return plots.embedding(xy, prep.inverse_y(y))
    return plots.embedding(xy, y, prep.classes)


def log_parent(ds, splits, trials: list[Trial]) -> None:
    """On the parent: scree plot and its numbers, the elbow, components for 90/95/99%, t-SNE picture."""
    import mlflow

    from mlflow_dl.data.reduction import scree
    from mlflow_dl.fit import plots

    s = scree(splits.x_train)
    table = pd.DataFrame({"component": np.arange(1, len(s.ratio) + 1), "explained_variance_ratio": s.ratio,
                          "cumulative": s.cumulative})
    mlflow.log_text(table.to_csv(index=False), "pca/explained_variance.csv")
    mlflow.log_metrics({**{f"pca_components_{round(t * 100)}": n for t, n in s.for_variance.items()},
                        **({"pca_elbow": s.elbow} if s.elbow is not None else {})})
    for path, fig in (("plots/scree.png", plots.scree(s.ratio, s.cumulative, s.elbow, s.for_variance)),
                      ("plots/tsne.png", tsne_picture(splits, trials[0].spec.data.seed))):
        mlflow.log_figure(fig, path)
        plots.close(fig)
