"""The `mlflow-dl` command line: thin wrappers over the Python API.

Nothing heavy is imported at module level, so `mlflow-dl --help` answers
without tensorflow or mlflow. User errors print one line and exit with code 2.

Here: the group, its entry points (main, program) and which commands it holds. The commands live in
one module per group: train (train, main), sweeps (sweep, rnn-vs-lstm, refine, tune), registry (promote,
serve, server), runs (sync, resume, reap, diagnose); common holds what several of them share.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

import click

from mlflow_dl.cli import registry, runs, sweeps, train
from mlflow_dl.errors import MlflowDLError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlflow-dl")
@click.option("--verbose", "verbose_logs", is_flag=True,
              help="Also show TensorFlow's start-up lines and MLflow's INFO lines (or MLFLOW_DL_VERBOSE=1).")
def cli(verbose_logs):
    """Run, track, compare and ship Keras experiments on MLflow.

    Runs go to MLFLOW_TRACKING_URI (default: sqlite:///mlflow.db in this folder).
    """
    from mlflow_dl import quiet

    if verbose_logs:
        os.environ[quiet.VERBOSE_ENV] = "1"
    quiet.own_process()


for _command in (train.train, train.main_job, sweeps.sweep, sweeps.rnn_vs_lstm, sweeps.refine, sweeps.tune,
                 registry.promote, registry.serve, registry.server, runs.sync, runs.resume, runs.reap, runs.diagnose):
    cli.add_command(_command)


def main(argv=None) -> None:
    """Entry point: one-line errors with exit code 2, no tracebacks for user mistakes."""
    from urllib.parse import urlsplit

    if urlsplit(os.environ.get("MLFLOW_TRACKING_URI", "")).password:  # MLflow would print "View run at <uri>"
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    try:
        cli.main(args=argv, prog_name="mlflow-dl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except MlflowDLError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(0)


def program() -> None:
    """The `mlflow-dl` program (console script, `python -m mlflow_dl`): main(), then exit as Python
    would, minus the interpreter's teardown. With TensorFlow, MLflow and pandas loaded, freeing every
    module and object one by one takes seconds after the work is done, on every command. For the same
    reason, what a sweep or fit freezes out of garbage collection stays frozen (heap.for_good)."""
    from mlflow_dl.runtime import heap, process

    process.own()  # this process is mlflow-dl's: it may tune the heap and TensorFlow for its fits
    heap.collect_less_often()
    heap.for_good()
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    if not isinstance(code, int):  # sys.exit("message") or sys.exit(None), as Python treats them
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    threading._shutdown()  # Python's first step at exit: thread pools wind down, other threads are joined
    atexit._run_exitfuncs()  # its second: atexit handlers (MLflow's, Ray's, logging's)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
