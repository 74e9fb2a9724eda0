"""Refine a finished sweep near its best: new trials between the best's neighbours on each numeric axis.

The new parent run goes in the coarse sweep's experiment, tagged `mlflow_dl.refines=<coarse parent>`; it runs
only the new trials, on the coarse sweep's data, split, seed and epochs (read from the coarse parent's params),
and its table and plots hold the coarse trials too (linked by run id, not retrained). A refined parent refines
again one level deeper: its table already holds every trial before it. The capacity family refines around
its knee (kneed, as its sweep finds it) rather than its lowest loss.
"""

from __future__ import annotations

import ast
import itertools
import math
import os
import tempfile
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from mlflow_dl.errors import ConfigError, DataError
from mlflow_dl.tags import DIGEST_PART_TAG, REFINES_TAG

NOTE_TAG = "mlflow_dl.refine_note"


@dataclass(frozen=True)
class FamilyAxes:
    """How refine reads a family: its swept value keys -> the `trials()` argument each is given by."""

    arguments: dict  # value key -> trials() keyword
    integer: tuple = ()  # value keys that are whole numbers
    bounds: dict = None  # value key -> (low, high) a value must stay inside (None: open)


FAMILIES = {
    "learning_rate": FamilyAxes({"lr": "lrs"}, bounds={"lr": (0.0, None)}),
    "dropout": FamilyAxes({"dropout": "rates"}, bounds={"dropout": (0.0, 1.0)}),
    "regularization": FamilyAxes({"strength": "strengths"}, bounds={"strength": (0.0, None)}),
    "data_size": FamilyAxes({"fraction": "fractions"}, bounds={"fraction": (0.0, 1.0)}),
    "capacity": FamilyAxes({"layers": "layers", "nodes": "nodes"}, integer=("layers", "nodes"),
                           bounds={"layers": (0.0, None), "nodes": (0.0, None)}),
    "custom": FamilyAxes({}),  # every numeric grid key, passed back as the grid
}
BESIDE = ("trial", "status", "error", "run_id", "sweep_run_id")  # table columns that are never an axis


@dataclass(frozen=True)
class Linked:
    """The coarse sweep's trials as the refined parent shows them: their table rows and val_loss curves, and
    the tags the refined parent carries (mlflow_dl.refines, the coarse key, the notes)."""

    table: pd.DataFrame
    histories: dict
    tags: dict

    def join(self, table: pd.DataFrame) -> pd.DataFrame:
        """The coarse rows, then this sweep's (each row says which parent ran it: `sweep_run_id`)."""
        import mlflow

        return pd.concat([self.table, table.assign(sweep_run_id=mlflow.active_run().info.run_id)], ignore_index=True)


@dataclass(frozen=True)
class Plan:
    """What refine will run: the family, its trials() arguments, the center trial and the notes."""

    family: str
    grid: dict
    center: pd.Series
    notes: tuple


def _geometric(values: list[float]) -> bool:
    """An axis laid out in log space: positive values whose log steps are more even than their linear ones
    (two values: a ratio of 4 or more)."""
    if len(values) < 2 or min(values) <= 0:
        return False
    if len(values) == 2:
        return max(values) / min(values) >= 4
    lin, log = np.diff(values), np.diff(np.log10(values))
    return np.std(log) / np.mean(log) < np.std(lin) / np.mean(lin)


def between(values: list, center, n: int, integer: bool = False, bounds=None,
            prefer: str = "upper") -> tuple[list, str | None]:
    """`n` new values strictly between the center and its neighbours on one axis (in log space when the axis is
    geometric), none already in `values`: half below the center, half above, the odd one on the `prefer` side
    (lower or upper). Where the center is on the grid's edge, one step past it. Returns the values and a note
    for the edge (None inside the grid)."""
    axis = sorted({float(v) for v in values})
    if len(axis) < 2:
        return [], None
    log = _geometric(axis)
    to, back = (np.log10, lambda x: 10 ** x) if log else (lambda x: x, lambda x: x)
    points = [float(to(v)) for v in axis]
    i = axis.index(float(center))
    note = None
    lo = points[i - 1] if i > 0 else points[i] - (points[i + 1] - points[i])
    hi = points[i + 1] if i < len(axis) - 1 else points[i] + (points[i] - points[i - 1])
    low, high = bounds or (None, None)
    if low is not None and not log and lo < low:
        lo = low
    if high is not None and back(hi) > high:
        hi = float(to(high))
    c = points[i]
    if i == 0 or i == len(axis) - 1:
        side, past = ("lower", lo) if i == 0 else ("upper", hi)
        if math.isclose(past, c):  # the edge is the axis' own bound (dropout 0, all rows): refine inside only
            note = f"the best {center:g} is on the grid's {side} edge, the bound of its values; refined inside only"
            prefer = "upper" if side == "lower" else "lower"
        else:
            note = (f"the best {center:g} is on the grid's {side} edge ({axis[0]:g}..{axis[-1]:g}); "
                    f"refined one step past it, to {back(past):.3g}")
            prefer = side
    below = n // 2 + (n % 2 if prefer == "lower" else 0)
    if note and "inside only" in note:  # nothing beyond the bound: every value on the open side
        below = n if prefer == "lower" else 0
    spots = list(np.linspace(lo, c, below + 2)[1:-1]) + list(np.linspace(c, hi, n - below + 2)[1:-1])
    if integer:  # whole numbers: the free ones in the interval, those nearest the spots first
        free = [k for k in range(math.ceil(back(lo)), math.floor(back(hi)) + 1)
                if back(lo) < k < back(hi) and k not in axis and (low is None or k > low) and (high is None or k <= high)]
        picked = []
        for x in spots:
            if free:
                k = min(free, key=lambda k: abs(float(to(k)) - x))
                picked.append(k)
                free.remove(k)
        return sorted(picked), note
    new = []
    for x in spots:
        v = back(float(x))
        v = float(f"{v:.4g}")
        if back(lo) < v < back(hi) and all(not math.isclose(v, a, rel_tol=1e-9) for a in axis) and v not in new:
            if (low is None or v > low or (v == low and not log)) and (high is None or v <= high):
                new.append(v)
    return sorted(new), note


def _better_side(table: pd.DataFrame, key: str, center: float) -> str:
    """lower or upper: the side whose nearest coarse value has the lower model_val_loss."""
    values = pd.to_numeric(table[key], errors="coerce")
    loss = pd.to_numeric(table["model_val_loss"], errors="coerce")
    below, above = values[values < center], values[values > center]
    if not len(below) or not len(above):
        return "lower" if len(above) else "upper"
    lower = loss[values == below.max()].min()
    upper = loss[values == above.min()].min()
    return "lower" if lower < upper else "upper"


def _grid_keys(family: str, params: dict, table: pd.DataFrame) -> dict[str, str]:
    """Value key -> trials() argument (custom: the grid's own keys)."""
    if family == "custom":
        text = params.get("sweep.grid", "")
        try:
            grid = ast.literal_eval(text) if text.strip().startswith("{") else None
        except (ValueError, SyntaxError):
            grid = None
        if grid is None:
            from mlflow_dl.families.custom import parse_grid

            grid = parse_grid(text)
        return {k: k for k in grid}
    return dict(FAMILIES[family].arguments)


def _numeric(series: pd.Series) -> bool:
    values = pd.to_numeric(series, errors="coerce")
    return bool(values.notna().all()) and not series.map(lambda v: isinstance(v, bool)).any()


def center_row(family: str, finished: pd.DataFrame, parent_metrics: dict) -> pd.Series:
    """The trial refine centres on: the capacity sweep's knee (the trial nearest it in log parameters),
    else the sweep's best (compare.best_row: a pruned trial only when no other finished)."""
    from mlflow_dl.sweeps.compare import best_row

    knee = parent_metrics.get("knee_total_params")
    if family == "capacity" and knee and knee > 0:
        distance = (np.log10(pd.to_numeric(finished["total_params"], errors="coerce")) - math.log10(knee)).abs()
        return finished.loc[distance.idxmin()]
    return best_row(finished)


def plan(family: str, params: dict, table: pd.DataFrame, parent_metrics: dict, trials: int) -> Plan:
    """The new grid: per numeric axis, values between the center's neighbours, crossed; other axes at the center's."""
    if trials < 1:
        raise ConfigError(f"trials={trials!r} is invalid; expected an integer >= 1")
    finished = table[(table["status"] == "FINISHED")
                     & np.isfinite(pd.to_numeric(table["model_val_loss"], errors="coerce"))]
    if not len(finished):
        raise ConfigError(f"the sweep's {len(table)} trials all failed (none FINISHED with a model_val_loss); "
                          "expected a sweep with at least one finished trial to refine around")
    center = center_row(family, finished, parent_metrics)
    if family == "regularization":  # kind=both: the strengths of the best's kind are its axis
        table, finished = (t[t["kind"] == center["kind"]] for t in (table, finished))
    keys = _grid_keys(family, params, table)
    spec = FAMILIES[family]
    numeric = [k for k in keys if k in table and _numeric(table[k]) and table[k].nunique() > 1]
    if not numeric:
        raise ConfigError(f"the {family} sweep has no numeric axis with two or more values "
                          f"({', '.join(keys) or 'no swept keys'}); expected a sweep over numbers to refine")
    per_axis = max(1, int(math.floor(trials ** (1 / len(numeric)) + 1e-9)))
    axes, notes = {}, []
    for key in numeric:
        integer = key in spec.integer or all(float(v).is_integer() for v in pd.to_numeric(table[key]))
        values, note = between(list(pd.to_numeric(table[key])), float(center[key]), per_axis, integer,
                               (spec.bounds or {}).get(key), _better_side(finished, key, float(center[key])))
        axes[key] = values or [_plain(center[key])]
        if note and values:
            notes.append(f"{key}: {note}")
    fixed = {k: _plain(center[k]) for k in keys if k not in axes}
    seen = {tuple(_plain(row[k]) for k in keys) for _, row in table.iterrows()}
    points = [dict(zip(axes, combo), **fixed) for combo in itertools.product(*axes.values())]
    if all(tuple(p[k] for k in keys) in seen for p in points):
        raise ConfigError(f"nothing left to try between the best's neighbours on {', '.join(numeric)} "
                          "(whole numbers next to each other); expected a grid with room between its values")
    if family == "custom":  # the axes crossed: every point has a new value on at least one axis
        grid = {"grid": {k: list(axes[k]) if k in axes else [fixed[k]] for k in keys}}
    else:
        grid = {spec.arguments[k]: ",".join(f"{v:g}" for v in sorted({p[k] for p in points})) for k in keys}
        if family == "regularization":
            grid.update(kind=str(center["kind"]), layers=params.get("sweep.layers", "all"))
    return Plan(family, grid, center, tuple(notes))


def _plain(value):
    """A table cell as the grid gives it: int, float, or the text."""
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    if pd.isna(number) or isinstance(value, bool):
        return value
    return int(number) if float(number).is_integer() and not isinstance(value, float) else float(number)


def _linked(parent_id: str, table: pd.DataFrame) -> Linked:
    """The coarse rows and their val_loss curves, read back from MLflow (not retrained)."""
    import mlflow

    client = mlflow.MlflowClient()
    if "sweep_run_id" not in table:
        table = table.assign(sweep_run_id=parent_id)
    histories = {}
    for _, row in table.iterrows():
        if isinstance(row.get("run_id"), str) and row["run_id"]:
            points = sorted(client.get_metric_history(row["run_id"], "val_loss"), key=lambda m: m.step)
            histories[row["trial"]] = {"val_loss": [m.value for m in points]}
    return Linked(table, histories, {})


def _coarse_key(client, parent_id: str, experiment_id: str) -> dict[str, str]:
    """A coarse trial's comparability tags (the key and its parts, the data's digest among them); {} if none."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                               f"tags.`{DIGEST_PART_TAG}` != ''", max_results=1)
    return {k: v for k, v in found[0].data.tags.items() if k.startswith("mlflow_dl.comparability")} if found else {}


def _check_digest(data_spec, expected: str | None, given: bool) -> None:
    """Refuse data whose digest is not the coarse sweep's (in one line)."""
    from mlflow_dl.data.datasets import load_dataset
    from mlflow_dl.training.trial import dataset_input

    if expected is None:
        return
    ds = load_dataset(data_spec.dataset, data_spec.target, data_spec.task, data_spec.dropna)
    digest = dataset_input(ds).digest  # as the coarse trials tagged it
    if digest != expected:
        what = "the data given" if given else f"dataset={data_spec.dataset!r}"
        raise DataError(f"{what} has digest {digest}, the coarse sweep's has {expected}; expected the same rows "
                        "the coarse sweep ran on (refine compares like with like)")


def refine(parent_run_id: str, trials: int = 4, data=None, target: str | None = None, build=None,
           workers: int = 1, executor: str | None = None, ray_address: str = "auto", prune=None,
           progress: bool = True, echo=None):
    """Refine the sweep `parent_run_id` near its best with `trials` new trials; returns the runner's SweepResult.

    `data` (with `target`): in-memory rows the coarse sweep was given from Python (arrays, a DataFrame...), passed
    again; refused when their digest differs. `build`: the custom sweep's function, when it was not importable by name.
    """
    import mlflow

    from mlflow_dl import families
    from mlflow_dl.training.resume import spec_from_params
    from mlflow_dl.sweeps.runner import sweep
    from mlflow_dl.delivery import runs

    run = runs.existing_run(parent_run_id)
    params, tags = run.data.params, run.data.tags
    family = params.get("sweep.family")
    if family is None or runs.PARENT_TAG in tags:
        raise ConfigError(f"run_id={parent_run_id!r} is not a sweep's parent run (no sweep.family param); "
                          "expected the parent run id a sweep printed")
    if family not in FAMILIES:
        raise ConfigError(f"run_id={parent_run_id!r} is a {family} sweep, which has no numeric axis refine "
                          f"knows; expected a sweep of: {', '.join(FAMILIES)}")
    client = mlflow.MlflowClient()
    try:
        path = mlflow.artifacts.download_artifacts(run_id=parent_run_id, artifact_path="results.csv")
    except Exception:  # noqa: BLE001 - no table: the sweep never got to its summary
        raise ConfigError(f"run_id={parent_run_id!r} has no results.csv; expected a sweep that ran to its "
                          "summary") from None
    table = pd.read_csv(path)
    the_plan = plan(family, params, table, run.data.metrics, trials)
    spec = spec_from_params(params)
    experiment = client.get_experiment(run.info.experiment_id).name
    key = _coarse_key(client, parent_run_id, run.info.experiment_id)
    if not key and "sweep_run_id" in table:  # a refined parent without trials of its own: its coarse one's
        key = _coarse_key(client, table["sweep_run_id"].iloc[0], run.info.experiment_id)
    expected = key.get(DIGEST_PART_TAG)
    linked = _linked(parent_run_id, table)
    notes = "; ".join(the_plan.notes)
    # the refined parent carries the coarse sweep's key (its trials are ranked with the coarse ones)
    linked = replace(linked, tags={REFINES_TAG: parent_run_id, **key, **({NOTE_TAG: notes[:5000]} if notes else {})})
    if echo is None:
        echo = print if progress else (lambda _line: None)
    for note in the_plan.notes:
        echo(f"refine: {note}")
    grid = dict(the_plan.grid)
    common = dict(fit=spec.fit, workers=workers, executor=executor, ray_address=ray_address, prune=prune,
                  experiment=experiment, progress=progress, linked=linked)
    with tempfile.TemporaryDirectory(prefix="mlflow-dl-data-") as tmp:
        data_spec = spec.data
        if data is not None:  # the rows again, as sweep_model was given them
            from mlflow_dl.families.custom import FRAME_NAME, frame_of

            frame, column = frame_of(data, target)
            if frame is not None:
                path = os.path.join(tmp, f"{FRAME_NAME}.csv")
                frame.to_csv(path, index=False)
                data_spec = replace(spec.data, dataset=path, target=column)
            else:
                data_spec = replace(spec.data, dataset=str(data), target=target or spec.data.target)
        elif family == "custom" and not os.path.exists(spec.data.dataset) and spec.data.dataset.endswith(".csv"):
            raise ConfigError(f"the coarse sweep's data {spec.data.dataset!r} was given in memory or is not found from "
                              f"{os.getcwd()}; expected it passed again: --data PATH, or refine(parent_run_id, "
                              "data=..., target=...)")
        _check_digest(data_spec, expected, data is not None)
        if family == "custom":
            ref = build if build is not None else params.get("sweep.build")
            return sweep(families.get("custom"), data=data_spec, build=ref, **common, **grid)
        return sweep(families.get(family), data=data_spec, model=spec.model, **common, **grid)
