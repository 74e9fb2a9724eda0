"""A sweep: one parent run, one nested child per trial, a comparison on the parent."""

from __future__ import annotations

import importlib
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from mlflow_dl.config import DataSpec, FitSpec, ModelSpec, TrialSpec
from mlflow_dl.errors import ConfigError


@dataclass(frozen=True)
class SweepResult:
    parent_run_id: str
    table: pd.DataFrame
    best_run_id: str | None

    @property
    def best(self) -> pd.Series | None:
        """The table's row of the best trial (lowest model_val_loss)."""
        if self.best_run_id is None:
            return None
        return self.table[self.table["run_id"] == self.best_run_id].iloc[0]


class Progress:
    """trial i/N, elapsed, ETA, best val_loss so far: a bar on a terminal, plain lines otherwise."""

    def __init__(self, total: int, echo=None, stream=None):
        self.total, self.done, self.best = total, 0, math.inf
        self.started = time.perf_counter()
        self.stream = stream or sys.stderr
        self.echo = echo
        self.tty = self.stream.isatty()

    def update(self, name: str, result) -> None:
        self.done += 1
        if result.status == "FINISHED":
            self.best = min(self.best, result.metrics.get("model_val_loss", math.inf))
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        bar = "#" * round(20 * self.done / self.total)
        pruned = getattr(result, "pruned_at_epoch", None)
        status = result.status.lower() if pruned is None else f"pruned at epoch {pruned}"
        line = (f"[{bar:<20}] trial {self.done}/{self.total} {name}: {status} "
                f"model_val_loss={result.metrics.get('model_val_loss', math.nan):.4g} | best {self.best:.4g} | elapsed {elapsed:.0f}s eta {eta:.0f}s")
        if self.echo is not None:
            self.echo(line)
        elif self.tty:
            end = "\n" if self.done == self.total else ""
            self.stream.write(f"\r\033[K{line}{end}")
            self.stream.flush()
        else:
            print(line, file=self.stream, flush=True)


def _warn_sqlite_workers(workers: int) -> None:
    import mlflow

    uri = mlflow.get_tracking_uri()
    if workers > 1 and (uri.startswith("sqlite") or "sqlite" in os.environ.get("MLFLOW_BACKEND_STORE_URI", "")):
        print(f"warning: {workers} workers writing to a SQLite store ({uri}) may wait on its lock; "
              "for parallel sweeps use a tracking server backed by PostgreSQL", file=sys.stderr)


@dataclass(frozen=True)
class _Plan:
    """A checked sweep: the family, its trials and the data they share, and how they run."""

    module: Any  # the family's module
    family: str
    base: TrialSpec
    trials: list
    ds: Any
    splits: Any
    executor: str
    workers: int
    prune: Any  # the PruneSpec, or None; bound to the parent's study once the parent starts


def sweep(family, data: DataSpec | None = None, model: ModelSpec | None = None, fit: FitSpec | None = None,
          workers: int = 1, experiment: str | None = None, progress: bool = True, echo=None,
          executor: str | None = None, ray_address: str = "auto", prune=None, linked=None,
          **grid) -> SweepResult:
    """Run every trial of `family` (a grid overridable by keyword, e.g. rates="0,0.5").

    `family`: a module holding QUESTION, AXIS and `trials(base, **grid)` (optionally load_data, bind, parent_params,
    rank_table, log_comparison, log_parent); workers and Ray import it by module name. `executor`: inline
    (workers=1), processes (workers>1) or ray (tasks on the cluster at `ray_address`). Bad grids fail before any
    run; a failing trial ends FAILED and the sweep goes on; Ctrl-C ends the parent KILLED, its table logged.
    `prune`: True or a mlflow_dl.training.pruning.PruneSpec stops losing trials early by Optuna's rule. `linked`
    (mlflow_dl/refinement.py): the tags of a sweep that refines another, and the coarse trials' table rows
    and curves, shown beside the new ones.
    """
    from mlflow_dl.training import pruning

    from mlflow_dl.runtime import heap

    plan = _plan(family, data, model, fit, workers, executor, prune, grid)
    import mlflow  # MLflow (and below, TensorFlow): only once the grid and the data are known to be usable

    from mlflow_dl.delivery import runs

    _warn_sqlite_workers(workers)
    pool = _start_executor(plan, ray_address)
    try:
        # the heap frozen from the parent's start to its end, trials and summary alike: let go any earlier,
        # the next full collection scans all that TensorFlow loaded inside the parent run
        with heap.frozen(), runs.tracked_run(plan.family, run_name=f"{plan.family} sweep",
                                             experiment=experiment) as parent:
            parent_id = parent.info.run_id
            if plan.prune is not None:  # the study every trial's process reports to
                prune = pruning.start_study(plan.prune, mlflow.get_tracking_uri(), parent_id)
                plan = replace(plan, prune=prune, trials=[replace(t, prune=prune) for t in plan.trials])
            _log_parent_params(plan, linked, grid)
            heap.take_in()  # the store's first connection: not garbage, and not the trials' to scan
            bar = Progress(len(plan.trials), echo=echo) if progress else None
            results, interrupted = _run_trials(plan, pool, parent_id, bar)
            table, best_run_id = _summarize(plan, parent_id, results, linked)
            if interrupted is not None:
                raise interrupted
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)  # a no-op once processes() shut it; else the workers go
    return SweepResult(parent_run_id=parent_id, table=table, best_run_id=best_run_id)


def _plan(module, data, model, fit, workers: int, executor: str | None, prune, grid: dict) -> _Plan:
    """The sweep checked before any run: its executor, its PruneSpec, its trials from the grid, the data loaded
    and split once. A bad value is a ConfigError (or the data's DataError)."""
    from mlflow_dl.training import pruning

    from mlflow_dl.data.datasets import load_dataset
    from mlflow_dl.data.split import split_and_scale

    family = module.__name__.rpartition(".")[2]
    if workers < 1:
        raise ConfigError(f"workers={workers!r} is invalid; expected an integer >= 1")
    executor = executor or ("inline" if workers == 1 else "processes")
    if executor not in ("inline", "processes", "ray"):
        raise ConfigError(f"executor={executor!r} is invalid; expected inline, processes or ray")
    base = TrialSpec(data=data or DataSpec(), model=model or ModelSpec(), fit=fit or FitSpec())
    prune = pruning.as_spec(prune)
    try:
        trials = module.trials(base, **{k: v for k, v in grid.items() if v is not None})
    except TypeError as exc:
        raise ConfigError(f"{family}: {exc}") from None
    if not trials:
        raise ConfigError(f"{family}: the grid is empty; expected at least one trial")
    if hasattr(module, "load_data"):  # a family with its own data (time series): load, check, split once
        ds, splits = module.load_data(base.data, trials)
    else:
        ds = load_dataset(base.data.dataset, base.data.target, base.data.task, base.data.dropna)
        splits = split_and_scale(ds, base.data)
    if hasattr(module, "bind"):  # trials that depend on the data (columns, row count) are checked here
        trials = module.bind(trials, ds, splits)
    return _Plan(module, family, base, trials, ds, splits, executor, workers, prune)


def _start_executor(plan: _Plan, ray_address: str):
    """Connect to Ray or start the worker processes (returned, for sweep to shut down); this process imports
    TensorFlow now when it runs trials too, before the parent run: not the sweep's own time."""
    from mlflow_dl.sweeps import executors

    pool = None
    if plan.executor == "ray":
        executors.connect_ray(ray_address)
    elif plan.executor == "processes":
        pool = executors.start_workers(plan.base.data, plan.module.__name__, plan.workers)
    if plan.executor != "ray":
        importlib.import_module("mlflow_dl.training.trial")
    return pool


def _log_parent_params(plan: _Plan, linked, grid: dict) -> None:
    """The parent's tags (a refinement's links) and params: what the trials share, and the sweep's settings."""
    import mlflow

    if linked is not None:
        mlflow.set_tags(linked.tags)
    base = plan.base
    shared = plan.module.parent_params(base) if hasattr(plan.module, "parent_params") else base.params()
    mlflow.log_params({**shared, "sweep.family": plan.family, "sweep.n_trials": len(plan.trials),
                       "sweep.workers": plan.workers, "sweep.executor": plan.executor,
                       "sweep.prune": plan.prune.describe(base.fit.epochs) if plan.prune else "off",
                       **{f"sweep.{k}": str(v) for k, v in grid.items() if v is not None}})


def _run_trials(plan: _Plan, pool, parent_id: str, bar: Progress | None) -> tuple[list, KeyboardInterrupt | None]:
    """Every trial as a child of `parent_id`: the results in trial order (None for a trial that never ended),
    and the Ctrl-C that stopped them, if any (sweep still summarises what finished, then raises it)."""
    from mlflow_dl.sweeps import executors

    trials, name = plan.trials, plan.module.__name__
    results: list = [None] * len(trials)

    def on_result(i, result):
        results[i] = result
        if bar:
            bar.update(trials[i].name, result)

    try:
        if plan.executor == "ray":
            executors.ray(trials, plan.base.data, name, parent_id, on_result)
        elif plan.executor == "inline":
            executors.inline(trials, plan.ds, plan.splits, name, parent_id, on_result)
        else:
            executors.processes(pool, plan.workers, trials, plan.ds, plan.splits, name, parent_id, on_result)
    except KeyboardInterrupt as exc:
        return results, exc
    return results, None


def _summarize(plan: _Plan, parent_id: str, results: list, linked) -> tuple[pd.DataFrame, str | None]:
    """On the parent: epochs and counts, `best_run_id`, results.csv, the comparison figures and the family's own
    pictures. Returns the table (a refinement's coarse trials in it) and the best child's run id."""
    import mlflow

    from mlflow_dl.training import pruning
    from mlflow_dl.sweeps import compare
    from mlflow_dl.delivery import failover

    module, trials = plan.module, plan.trials
    failover.follow(parent_id)  # the server went away during the trials: the summary goes offline too
    done = [(t, r) for t, r in zip(trials, results) if r is not None]
    table = compare.results_table([t for t, _ in done], [r for _, r in done])
    histories = {t.name: r.history for t, r in done}
    epochs = [int(n) for n in table["epochs_trained"]] if len(table) else []
    pruned = [p == p for p in table["pruned_at_epoch"]] if len(table) else []  # NaN: not pruned
    mlflow.log_metrics({"epochs_trained": sum(epochs), "n_pruned": sum(pruned), "epochs_full_grid":
                        pruning.full_grid_epochs(epochs, pruned, [t.spec.fit.epochs for t, _ in done])})
    counts = {"n_trials": len(trials), "n_finished": int((table["status"] == "FINISHED").sum()) if len(table) else 0,
              "n_failed": int((table["status"] == "FAILED").sum()) if len(table) else 0}  # this sweep's own
    if linked is not None:  # the coarse sweep's trials, linked (not retrained), before the new ones
        table = linked.join(table)
        histories = {**linked.histories, **histories}
    finished = table[table["status"] == "FINISHED"] if len(table) else table
    best_run_id = None
    if len(finished) and (best := compare.best_row(finished)) is not None:
        best_run_id = best["run_id"]
        mlflow.set_tag("best_run_id", best_run_id)
    mlflow.log_metrics(counts)
    if hasattr(module, "rank_table"):  # a family's own rows beside the trials (baselines), ranked
        table = module.rank_table(table, plan.ds, plan.splits, trials)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "results.csv")
        table.to_csv(path, index=False)
        mlflow.log_artifact(path)
    if len(finished):
        _log_figures(module, table, histories)
    if hasattr(module, "log_parent"):  # a family's own pictures of the data (scree, t-SNE)
        module.log_parent(plan.ds, plan.splits, trials)
    return table, best_run_id


def _log_figures(module, table: pd.DataFrame, histories: dict) -> None:
    """The comparison figures and the knee on the parent, then the family's own comparisons."""
    import mlflow

    from mlflow_dl.sweeps import compare
    from mlflow_dl.fit import plots  # matplotlib: after the workers' start, not before it

    figures, knee_value = compare.comparison_figures(table, histories, module.AXIS)
    for artifact, fig in figures.items():
        mlflow.log_figure(fig, artifact)
        plots.close(fig)
    if knee_value is not None:
        mlflow.log_metric(f"knee_{module.AXIS.key}", knee_value)
    if hasattr(module, "log_comparison"):  # a family's own comparisons (one per swept key)
        module.log_comparison(table, histories)
