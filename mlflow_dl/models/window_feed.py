"""Windows streamed to Keras one batch at a time from a strided view (the 3-D array never exists)."""

from __future__ import annotations

import keras
import numpy as np

from mlflow_dl.data.windows import windows


class WindowBatches(keras.utils.PyDataset):
    """Batches of (window, target) cut from rows x and targets y; only the batch is copied.

    Shuffled per epoch (seeded) when `shuffle`, in time order otherwise.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, timesteps: int, horizon: int = 1, batch_size: int = 32,
                 shuffle: bool = False, seed: int = 0):
        super().__init__()
        self.x, self.y = windows(np.asarray(x, np.float32), np.asarray(y, np.float32), timesteps, horizon)
        self.batch_size, self.shuffle = batch_size, shuffle
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(self.x)) if shuffle else None

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i: int):
        rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
        if self._order is not None:
            rows = np.sort(self._order[rows])
        return np.array(self.x[rows]), np.array(self.y[rows]).reshape(-1, 1)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._order = self._rng.permutation(len(self.x))
