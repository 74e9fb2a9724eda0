"""B4: `mlflow-dl --help` and every `mlflow-dl <command> --help` against `import tensorflow`.

Each arm runs as a fresh process, repeated; medians are compared. Last line: the ratio.

    python bench/cli_start.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time


def commands() -> list[list[str]]:
    import click

    from mlflow_dl.cli import cli

    out = [[]]
    for name in sorted(cli.commands):
        out.append([name])
        command = cli.commands[name]
        if isinstance(command, click.Group):  # `mlflow-dl sweep <family> --help` too
            out.extend([name, sub] for sub in sorted(command.commands))
    return out


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    exe = shutil.which("mlflow-dl", path=os.path.dirname(sys.executable)) or "mlflow-dl"
    results = {}
    for sub in commands():
        label = "mlflow-dl " + " ".join(sub + ["--help"])
        results[label] = statistics.median(timed([exe, *sub, "--help"]) for _ in range(args.repeats))
        print(f"{label}: {results[label]:.3f}s", flush=True)
    tf = statistics.median(timed([sys.executable, "-c", "import tensorflow"]) for _ in range(args.repeats))
    print(f"import tensorflow: {tf:.3f}s")
    slowest = max(results, key=results.get)
    print(f"cli_start ratio={results[slowest] / tf:.3f} (slowest: {slowest} {results[slowest]:.3f}s / "
          f"import tensorflow {tf:.3f}s, median of {args.repeats})")


if __name__ == "__main__":
    main()
