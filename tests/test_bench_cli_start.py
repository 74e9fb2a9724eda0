"""Benchmark B4 runs (quick mode): its --help arms, `import tensorflow`, and its table of data errors."""

import os
import re
import subprocess
import sys

from conftest import REPO


def test_cli_start_quick_mode_prints_the_data_error_table():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "cli_start.py"), "--quick"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = re.findall(r"^\| (.+?) \| (\d+\.\d+) \| (\d+\.\d+) \| (\d+\.\d+) \|$", proc.stdout, re.M)
    assert [r[0] for r in rows] == ["(import tensorflow)", "train: missing values", "sweep dropout: bad grid",
                                    "rnn-vs-lstm: bad dates"]
    assert re.search(r"^cli_start ratio=\d+\.\d+ .*slowest data error \d+\.\d+s\)$", proc.stdout, re.M)
