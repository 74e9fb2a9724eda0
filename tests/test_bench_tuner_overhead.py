"""B7's quick mode: every arm (bare keras-tuner, `tune`, the autologged user search) runs to its end."""

import re
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_tuner_overhead_quick_mode_runs_every_arm():
    proc = subprocess.run([sys.executable, f"{REPO}/bench/tuner_overhead.py", "--quick"], capture_output=True,
                          text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert re.search(r"^rep 1 autolog: [\d.]+s", proc.stdout, re.M)
    assert re.search(r"^tuner_overhead ratio=[\d.]+ ", proc.stdout, re.M)
    assert re.search(r"^autolog_tuner_overhead ratio=[\d.]+ \(autologged user search", proc.stdout, re.M)
