"""The benchmarks still run: each in its quick mode (seconds; its figures mean nothing)."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_serving_latency_benchmark_runs_in_quick_mode(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "serving_latency.py"), "--quick"],
                          cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.match(r"serving_latency ratio=\d+\.\d+ \(stock [\d.]+ ms / mlflow-dl [\d.]+ ms one-row p50", last), last
