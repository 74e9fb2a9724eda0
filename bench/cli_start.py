"""B4: `mlflow-dl --help` and every `mlflow-dl <command> --help` against `import tensorflow`; and the time
to a data error (a bad CSV, a bad grid, bad dates, ...) against the same import.

Each arm runs as a fresh process, repeated; medians are compared. Every data error must end with exit
code 2 and one line on stderr, or the benchmark stops. Last line: the ratio.

    python bench/cli_start.py [--repeats 5]
    python bench/cli_start.py --quick          # one repeat, two --help commands, three data errors
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def data_errors(folder: str) -> dict[str, list[str]]:
    """Bad inputs a user brings, written into `folder`: label -> the command's arguments."""
    with open(os.path.join(folder, "nans.csv"), "w") as f:
        f.write("a,b,y\n" + "".join(f"{'' if i < 3 else i},{i % 7},{i % 2}\n" for i in range(40)))
    with open(os.path.join(folder, "text.csv"), "w") as f:
        f.write("a,city,y\n" + "".join(f"{i},{'xy'[i % 2]},{i % 2}\n" for i in range(40)))
    with open(os.path.join(folder, "dates.csv"), "w") as f:
        f.write("date,y\n" + "".join(f"{'not a date' if i == 5 else f'2020-01-{i + 1:02d}'},{i}\n" for i in range(28)))
    return {
        "train: missing file": ["train", "--dataset", "missing.csv", "--target", "y"],
        "train: missing values": ["train", "--dataset", "nans.csv", "--target", "y"],
        "train: non-numeric column": ["train", "--dataset", "text.csv", "--target", "y"],
        "train: unknown data set": ["train", "--dataset", "mnist"],
        "sweep dropout: bad grid": ["sweep", "dropout", "--rates", "0,1.5"],
        "sweep multi_input: bad --groups": ["sweep", "multi_input", "--groups", "nomatch*"],
        "rnn-vs-lstm: bad dates": ["rnn-vs-lstm", "--dataset", "dates.csv", "--date-column", "date", "--target", "y"],
        "tune: missing values": ["tune", "--dataset", "nans.csv", "--target", "y"],
    }


QUICK_ERRORS = ("train: missing values", "sweep dropout: bad grid", "rnn-vs-lstm: bad dates")


def cpu_seconds() -> float:
    """CPU time (user + system) of the finished child processes so far: on a busy machine the wall time
    grows with the load, the CPU time a process needs much less."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], cwd: str | None = None, expect: int = 0, cpu: list | None = None) -> float:
    """Wall seconds of one run of `cmd`; its CPU seconds appended to `cpu` if given."""
    started, cpu_before = time.perf_counter(), cpu_seconds()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if cpu is not None:
        cpu.append(cpu_seconds() - cpu_before)
    lines = proc.stderr.count("\n")
    if proc.returncode != expect or (expect == 2 and lines != 1):
        raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}, {lines} lines on stderr; expected exit {expect}"
                         f"{' and one line' if expect == 2 else ''}:\n{proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="One repeat, a few commands: checks the benchmark runs.")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    exe = shutil.which("mlflow-dl", path=os.path.dirname(sys.executable)) or "mlflow-dl"
    helps = commands()[:2] if args.quick else commands()
    results = {}
    for sub in helps:
        label = "mlflow-dl " + " ".join(sub + ["--help"])
        results[label] = statistics.median(timed([exe, *sub, "--help"]) for _ in range(repeats))
        print(f"{label}: {results[label]:.3f}s", flush=True)
    tf_cpu: list[float] = []
    tf = statistics.median(timed([sys.executable, "-c", "import tensorflow"], cpu=tf_cpu) for _ in range(repeats))
    print(f"import tensorflow: {tf:.3f}s (CPU {statistics.median(tf_cpu):.3f}s)")

    with tempfile.TemporaryDirectory() as folder:
        errors = data_errors(folder)
        if args.quick:
            errors = {k: errors[k] for k in QUICK_ERRORS}
        env_store = {"MLFLOW_TRACKING_URI": f"sqlite:///{os.path.join(folder, 'mlflow.db')}"}
        os.environ.update(env_store)  # a data error must not touch the store; this one is thrown away anyway
        print("\n| data error (exit 2, one line) | seconds | / import tensorflow | CPU seconds |\n|---|---|---|---|")
        print(f"| (import tensorflow) | {tf:.3f} | 1.00 | {statistics.median(tf_cpu):.3f} |")
        to_error = {}
        for label, cmd in errors.items():
            cpu: list[float] = []
            to_error[label] = statistics.median(timed([exe, *cmd], cwd=folder, expect=2, cpu=cpu) for _ in range(repeats))
            print(f"| {label} | {to_error[label]:.3f} | {to_error[label] / tf:.2f} | {statistics.median(cpu):.3f} |",
                  flush=True)
    slowest_error = max(to_error, key=to_error.get)
    print(f"\nslowest data error: {slowest_error} {to_error[slowest_error]:.3f}s (goal < 2 s)")
    slowest = max(results, key=results.get)
    print(f"cli_start ratio={results[slowest] / tf:.3f} (slowest: {slowest} {results[slowest]:.3f}s / "
          f"import tensorflow {tf:.3f}s, median of {repeats}; slowest data error {to_error[slowest_error]:.3f}s)")


if __name__ == "__main__":
    main()
