"""PCA on the scaled training rows, carried in the preprocessing so a served model still takes raw rows.

Knows nothing of MLflow or Keras.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mlflow_dl.data.split import Splits
from mlflow_dl.errors import ConfigError

VARIANCE_TARGETS = (0.90, 0.95, 0.99)


@dataclass(frozen=True)
class Scree:
    """Explained-variance ratio per component (scikit-learn's), its cumulative sum, the elbow."""

    ratio: np.ndarray
    cumulative: np.ndarray
    elbow: int | None  # number of components at the knee of the ratio curve
    for_variance: dict[float, int]  # 0.95 -> components needed for 95% of the variance


def parse_components(text) -> tuple[int | str, ...]:
    """'2,5,10,raw' -> (2, 5, 10, 'raw'): counts >= 1 and/or raw (the features as they are)."""
    items = [str(i).strip().lower() for i in (text.split(",") if isinstance(text, str) else text)]
    items = [i for i in items if i]
    if not items:
        raise ConfigError(f"components={text!r} is invalid; expected a comma list of counts and/or raw, "
                          "e.g. 2,5,10,raw")
    for item in items:
        if item != "raw" and (not item.isdigit() or int(item) < 1):
            raise ConfigError(f"components={item!r} is invalid; expected a count >= 1 or raw")
    return tuple(dict.fromkeys(i if i == "raw" else int(i) for i in items))


def check_components(counts, n_features: int, n_rows: int) -> None:
    """PCA cannot return more components than features or training rows."""
    limit = min(n_features, n_rows)
    for k in counts:
        if k != "raw" and k > limit:
            raise ConfigError(f"components={k} is larger than the data allows ({n_features} features, "
                              f"{n_rows} training rows); expected at most {limit}")


def fit_pca(x_train: np.ndarray, n_components: int | None = None):
    from sklearn.decomposition import PCA

    return PCA(n_components=n_components, svd_solver="full").fit(x_train)


def scree(x_train: np.ndarray) -> Scree:
    """The full PCA's explained variance; the elbow by kneed on the ratio curve."""
    from kneed import KneeLocator

    ratio = fit_pca(x_train).explained_variance_ratio_
    cumulative = np.cumsum(ratio)
    k = np.arange(1, len(ratio) + 1)
    elbow = KneeLocator(k, ratio, curve="convex", direction="decreasing").knee if len(k) >= 3 else None
    needed = {t: int(min(np.searchsorted(cumulative, t - 1e-12) + 1, len(ratio))) for t in VARIANCE_TARGETS}
    return Scree(ratio=ratio, cumulative=cumulative, elbow=None if elbow is None else int(elbow), for_variance=needed)


def pca_splits(splits: Splits, n_components: int) -> Splits:
    """PCA fitted on the scaled training part only; every split projected; the projection in the preprocessing."""
    pca = fit_pca(splits.x_train, n_components)
    prep = replace(splits.preprocessing, pca_mean=tuple(map(float, pca.mean_)),
                   pca_components=tuple(tuple(map(float, row)) for row in pca.components_))

    def project(x):
        return pca.transform(x).astype(np.float32)

    return replace(splits, x_train=project(splits.x_train), x_val=project(splits.x_val),
                   x_test=project(splits.x_test), preprocessing=prep)
