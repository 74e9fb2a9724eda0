"""B3 windowing: the lecture's nested-loop `temporalize` against mlflow-dl's windows as they feed `fit`.

100,000 rows x 4 features, timesteps 30. Each arm runs 3 times; time and tracemalloc peak
(allocations made by the arm, beyond the input array; one extra traced run) are reported.
rnn_vs_lstm feeds every part this way, over a view of the series' rows (for a validation or
test part, from `timesteps + horizon - 1` rows before it), so nothing else is copied.
`--quick` (one repeat, 5,000 rows: seconds) checks that it runs; its figures are not the goals'.
Last line: `windowing ratio=` baseline time / mlflow-dl time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FEATURES, TIMESTEPS, BATCH = 4, 30, 32
FULL, QUICK = (100_000, 3), (5_000, 1)  # (rows, repeats)


def temporalize(X, y, lookback):
    """The lecture's version: for every target, the `lookback` rows before it, appended one by one."""
    output_X, output_y = [], []
    for i in range(len(X) - lookback):
        t = []
        for j in range(lookback):
            t.append(X[[(i + j)], :])
        output_X.append(t)
        output_y.append(y[i + lookback])
    return np.squeeze(np.array(output_X)), np.array(output_y)


def baseline(x, y):
    windows, targets = temporalize(x, y, TIMESTEPS)
    return windows.shape[0]


def mlflow_dl(x, y):
    """What fit consumes: every batch of WindowBatches (a strided view, one batch copied at a time)."""
    from mlflow_dl.models.window_feed import WindowBatches

    feed = WindowBatches(x, y, TIMESTEPS, 1, BATCH, shuffle=True, seed=0)
    n = 0
    for i in range(len(feed)):
        xb, yb = feed[i]
        n += len(xb)
    return n


def measure(arm, x, y, repeats):
    """Median time of `repeats` untraced runs; then the peak of one run under tracemalloc (it slows allocations)."""
    times, count = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        count = arm(x, y)
        times.append(time.perf_counter() - started)
    tracemalloc.start()
    arm(x, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times), peak, count


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat on 5,000 rows (seconds): a smoke run")
    rows, repeats = QUICK if parser.parse_args(argv).quick else FULL
    import keras  # noqa: F401  (imported before timing: the feed is a keras PyDataset)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    y = rng.normal(size=rows).astype(np.float32)
    print(f"input: {rows:,} rows x {FEATURES} features float32 = {x.nbytes / 1e6:.2f} MB, timesteps {TIMESTEPS}, "
          f"batch {BATCH}, median of {repeats}, nproc {os.cpu_count()}")
    base_t, base_peak, base_n = measure(baseline, x, y, repeats)
    ours_t, ours_peak, ours_n = measure(mlflow_dl, x, y, repeats)
    assert base_n == ours_n, (base_n, ours_n)
    for name, t, peak in (("temporalize (lecture)", base_t, base_peak), ("mlflow-dl WindowBatches", ours_t, ours_peak)):
        print(f"{name:<26} {t:8.3f} s   peak {peak / 1e6:8.2f} MB = {peak / x.nbytes:6.2f}x the input")
    ratio, memory = base_t / ours_t, ours_peak / x.nbytes
    print(f"goals: >= 100x faster {'met' if ratio >= 100 else 'NOT met'}; "
          f"peak <= 2x the input {'met' if memory <= 2 else 'NOT met'}")
    print(f"windowing ratio={ratio:.1f} (temporalize {base_t:.2f}s / mlflow-dl {ours_t:.3f}s, "
          f"peak {base_peak / x.nbytes:.1f}x vs {memory:.2f}x the input, median of {repeats})")


if __name__ == "__main__":
    main()
