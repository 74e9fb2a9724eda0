"""Benchmarks still run: each one's quick mode, in seconds (their figures belong in bench/RESULTS.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO


def test_windowing_benchmark_runs_in_quick_mode():
    out = subprocess.run([sys.executable, os.path.join(REPO, "bench", "windowing.py"), "--quick"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("input: 5,000 rows x 4 features") and "median of 1" in lines[0]
    assert "peak <= 2x the input met" in lines[-2]  # the windows stream: the 3-D array is never built
    assert lines[-1].startswith("windowing ratio=")


@pytest.mark.slow  # two scoring servers and a training run: a few minutes on a busy machine
def test_serving_latency_benchmark_runs_in_quick_mode(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(REPO, "bench", "serving_latency.py"), "--quick"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHONPATH": REPO, "TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert re.match(r"serving_latency ratio=\d+\.\d+ \(stock [\d.]+ ms / mlflow-dl [\d.]+ ms one-row p50", last), last


@pytest.mark.slow
def test_tracking_overhead_quick_mode_runs_every_arm():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "tracking_overhead.py"), "--quick"],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    arms = {m.group(1) for line in lines if (m := re.match(r"rep 1 (\S+): \d+\.\d+s", line))}
    assert arms == {"plain", "autolog", "autolog-nomodel", "mlflow-dl", "plain-once"}
    assert re.fullmatch(r"tracking_overhead ratio=\d+\.\d\d \(mlflow-dl \S+s / plain \S+s, median of 1\)", lines[-1])


def test_cli_start_benchmark_runs_in_quick_mode():
    out = subprocess.run([sys.executable, os.path.join(REPO, "bench", "cli_start.py"), "--quick"],
                         capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = re.findall(r"^\| (.+?) \| (\d+\.\d+) \| (\d+\.\d+) \| (\d+\.\d+) \|$", out.stdout, re.M)
    assert [r[0] for r in rows] == ["(import tensorflow)", "train: missing values", "sweep dropout: bad grid",
                                    "rnn-vs-lstm: bad dates"]  # each one exit 2 and one line, or the benchmark stops
    assert re.search(r"^cli_start ratio=\d+\.\d+ .*slowest data error \d+\.\d+s\)$", out.stdout, re.M)


@pytest.mark.slow  # a tracking server and three searches in their own processes: minutes on a busy machine
def test_tuner_overhead_benchmark_runs_every_arm_in_quick_mode():
    out = subprocess.run([sys.executable, os.path.join(REPO, "bench", "tuner_overhead.py"), "--quick"],
                         capture_output=True, text=True, timeout=900, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
    assert re.search(r"^rep 1 autolog: [\d.]+s", out.stdout, re.M)
    assert re.search(r"^tuner_overhead ratio=[\d.]+ ", out.stdout, re.M)
    assert re.search(r"^autolog_tuner_overhead ratio=[\d.]+ \(autologged user search", out.stdout, re.M)


@pytest.mark.slow  # `mlflow run` twice and three sweep commands in their own processes: minutes
def test_sweep_throughput_benchmark_runs_every_arm_in_quick_mode(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(REPO, "bench", "sweep_throughput.py"), "--quick"],
                         capture_output=True, text=True, timeout=1200, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
    arms = re.findall(r"^rep 1 (\w+): [\d.]+s$", out.stdout, re.M)
    assert arms == ["loop", "inline", "workers"], out.stdout
    assert re.search(r"^sweep_throughput ratio=\d+\.\d\d \(loop [\d.]+s / inline [\d.]+s, median of 1\)$",
                     out.stdout, re.M), out.stdout


@pytest.mark.slow  # a PostgreSQL schema, 1,000 runs and a tracking server: a minute or more on a busy machine
def test_promotion_scale_benchmark_runs_in_quick_mode():
    from servers import _pg_reachable

    if not _pg_reachable():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable at 127.0.0.1:5432 and CI is set: B5 must run in CI")
        pytest.skip("no PostgreSQL reachable at 127.0.0.1:5432 (B5 needs it)")
    out = subprocess.run([sys.executable, os.path.join(REPO, "bench", "promotion_scale.py"), "--quick"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
    assert re.search(r"^100 runs: pick \+ alias move [\d.]+s \(median of 1\)$", out.stdout, re.M), out.stdout
    assert re.search(r"^promotion_scale ratio=\d+\.\d\d \(1,000 runs [\d.]+s / 100 runs [\d.]+s, median of 1\)$",
                     out.stdout, re.M), out.stdout


def test_architecture_logging_benchmark_runs_in_quick_mode():
    out = subprocess.run([sys.executable, os.path.join(REPO, "bench", "architecture_logging.py"), "--quick"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.fullmatch(r"architecture_logging ratio=\d+\.\d\d \(mlp .+; median of 1, 2 epochs\)",
                        out.stdout.strip().splitlines()[-1]), out.stdout


@pytest.mark.slow  # three small sweeps and a refine, each its own CLI process
def test_search_cost_benchmark_runs_every_arm_in_quick_mode(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(REPO, "bench", "search_cost.py"), "--quick"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHONPATH": REPO, "TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    arms = {m.group(1) for line in lines if (m := re.match(r"rep 1 (\w+): \d+ epochs, \d+\.\ds", line))}
    assert arms == {"full", "pruned", "refined"}
    assert re.fullmatch(r"search_cost ratio=\d+\.\d\d \(pruned \d+ / full grid \d+ epochs; coarse\+refine "
                        r"ratio=\d+\.\d\d; best model_val_loss full \S+, pruned \S+, coarse\+refine \S+; median of 1\)",
                        lines[-1]), lines[-1]
