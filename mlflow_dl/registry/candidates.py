"""Which runs compete for promotion, best first: one comparability key, finite weights, a servable model.

The pick is server-side queries (lowest `model_val_loss`, ties -> fewer params -> earlier start), never a
download of every run; a pruned trial ranks after every other, and a refined sweep takes in the trials of the
sweeps it refines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlflow_dl.errors import ConfigError, PromotionError
from mlflow_dl.registry.model_checks import model_info
from mlflow_dl.tags import DATASET_TAG, DIGEST_PART_TAG, KEY_TAG, MODEL_SKIPPED_TAG, NONFINITE_TAG, PRUNED_TAG, REFINES_TAG

METRIC = "model_val_loss"
TOP = 50  # rows fetched per query; enough to see the ties and a few runs without a servable model
MAX_KEYS = 20  # keys listed when a scope holds several


@dataclass(frozen=True)
class Candidate:
    """A finished run as promotion sees it."""

    run_id: str
    value: float
    total_params: int
    start_time: int
    dataset: str
    key: str
    pruned: bool = False  # stopped by a sweep's pruner: ranked after every run that was not
    unhashed: bool = False  # its key covers data whose contents were not hashed (tf.data, a generator)


def tracking_client():
    import mlflow

    return mlflow.MlflowClient()


def candidate(run) -> Candidate:
    params, tags = run.data.params, run.data.tags
    try:
        total = int(params.get("model.total_params", ""))
    except ValueError:
        total = 2**62  # unknown size loses every tie
    return Candidate(run_id=run.info.run_id, value=float(run.data.metrics.get(METRIC, math.inf)), total_params=total,
                     start_time=int(run.info.start_time or 0),
                     dataset=tags.get(DATASET_TAG) or params.get("data.dataset", "?"), key=tags.get(KEY_TAG, ""),
                     pruned=PRUNED_TAG in tags, unhashed="unhashed:" in tags.get(DIGEST_PART_TAG, ""))


def quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def _scope(experiment: str, parent_run_id: str | None, dataset: str | None, key: str | None) -> str:
    scope = f"sweep {parent_run_id!r}" if parent_run_id else f"experiment {experiment!r}"
    scope += f" on dataset {dataset!r}" if dataset else ""
    return scope + (f" with key {key!r}" if key else "")


def _where(parent_run_id: str | None, dataset: str | None, key: str | None) -> list[str]:
    """Candidates: FINISHED, a model_val_loss, a comparability key, finite weights, a model (server-side)."""
    where = ["attributes.status = 'FINISHED'", f"metrics.{METRIC} > -1e308", f"tags.`{KEY_TAG}` IS NOT NULL",
             f"tags.`{NONFINITE_TAG}` IS NULL", f"tags.`{MODEL_SKIPPED_TAG}` IS NULL"]
    if parent_run_id:
        where.append(f"tags.`mlflow.parentRunId` = {quote(parent_run_id)}")
    if dataset:
        where.append(f"tags.`{DATASET_TAG}` = {quote(dataset)}")
    if key:
        where.append(f"tags.`{KEY_TAG}` = {quote(key)}")
    return where


def _keys(client, experiment_id: str, where: list[str], seen: list[str]) -> list[str]:
    """Every key in scope, one single-row query per key beyond those already `seen` (server-side)."""
    keys = list(seen)
    while len(keys) <= MAX_KEYS:
        others = [f"tags.`{KEY_TAG}` != {quote(k)}" for k in keys]
        found = client.search_runs([experiment_id], filter_string=" and ".join(where + others), max_results=1)
        if not found:
            break
        keys.append(found[0].data.tags[KEY_TAG])
    return keys


def _several_keys(client, experiment_id: str, where: list[str], keys: list[str], scope: str) -> PromotionError:
    """One line: the keys found, each with its data set names and run count."""
    parts = []
    for k in keys[:MAX_KEYS]:
        where_k = " and ".join(where + [f"tags.`{KEY_TAG}` = {quote(k)}"])
        found = client.search_runs([experiment_id], filter_string=where_k, max_results=50000)
        names = sorted({candidate(r).dataset for r in found})
        parts.append(f"{k} ({', '.join(names)}: {len(found)} run{'s' if len(found) != 1 else ''})")
    more = f" and more than {MAX_KEYS} others" if len(keys) > MAX_KEYS else ""
    return PromotionError(f"{len(keys)} comparability keys in {scope}, runs of different keys are not compared: "
                          f"{'; '.join(parts)}{more}; pass --key, --dataset or --parent-run-id to pick one")


def ranked(experiment: str, parent_run_id: str | None = None, dataset: str | None = None, key: str | None = None,
           client=None, follow_refines: bool = True) -> list[Candidate]:
    """The candidates of the one comparability key in scope, best first: lowest model_val_loss,
    ties -> fewer params -> earlier start; a pruned trial after every other. At most a page beyond the ties.

    Raises PromotionError with one line when the scope holds no candidate or several keys
    (listing them), ConfigError when the experiment does not exist. A refined sweep's `parent_run_id` also
    takes in the trials of the sweeps it refines (`follow_refines`).
    """
    client = client or tracking_client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(f"experiment={experiment!r} not found; expected the name of an existing experiment")
    if parent_run_id and follow_refines and len(chain := sweep_chain(client, parent_run_id)) > 1:  # a refined sweep and those it refines
        return _ranked_chain(experiment, chain, dataset, key, client)
    where = _where(parent_run_id, dataset, key)
    scope = _scope(experiment, parent_run_id, dataset, key)
    runs = client.search_runs([exp.experiment_id], filter_string=" and ".join(where),
                              order_by=[f"metrics.{METRIC} ASC"], max_results=TOP)
    runs = [r for r in runs if _eligible(r)]
    if not runs:
        raise PromotionError(f"no candidate in {scope}: no FINISHED run with a finite {METRIC}, a comparability key, "
                             "finite weights and a servable model; train one first")
    keys = _keys(client, exp.experiment_id, where, list(dict.fromkeys(r.data.tags[KEY_TAG] for r in runs)))
    if len(keys) > 1:
        raise _several_keys(client, exp.experiment_id, where, keys, scope)
    best_value = runs[0].data.metrics[METRIC]
    if all(r.data.metrics[METRIC] == best_value for r in runs) and len(runs) == TOP:
        # more ties than one page: fetch every run at exactly the best value
        runs = client.search_runs([exp.experiment_id],
                                  filter_string=" and ".join(where + [f"metrics.{METRIC} <= {best_value!r}"]),
                                  order_by=[f"metrics.{METRIC} ASC"], max_results=5000)
    return sorted(map(candidate, filter(_eligible, runs)),
                  key=lambda c: (c.pruned, c.value, c.total_params, c.start_time, c.run_id))


def sweep_chain(client, parent_run_id: str) -> list[str]:
    """The sweep `parent_run_id` and every sweep it refines (tag mlflow_dl.refines), newest first."""
    chain = [parent_run_id]
    while len(chain) < 100:
        try:
            coarse = client.get_run(chain[-1]).data.tags.get(REFINES_TAG)
        except Exception:  # noqa: BLE001 - not a run here: the usual "no candidate" answer follows
            break
        if not coarse or coarse in chain:
            break
        chain.append(coarse)
    return chain


def _ranked_chain(experiment: str, chain: list[str], dataset, key, client) -> list[Candidate]:
    """`ranked` over the children of every sweep in a refine chain, as one scope of one key."""
    found = []
    for parent in chain:
        try:
            found += ranked(experiment, parent, dataset, key, client, follow_refines=False)
        except PromotionError:  # a sweep of the chain without candidates: the others still compete
            pass
    scope = _scope(experiment, chain[0], dataset, key) + f" and the {len(chain) - 1} sweep(s) it refines"
    if not found:
        raise PromotionError(f"no candidate in {scope}: no FINISHED run with a finite {METRIC}, a comparability "
                             "key, finite weights and a servable model; train one first")
    if len(keys := sorted({c.key for c in found})) > 1:
        raise PromotionError(f"{len(keys)} comparability keys in {scope} ({', '.join(keys)}), runs of different "
                             "keys are not compared; pass --key to pick one")
    return sorted(found, key=lambda c: (c.pruned, c.value, c.total_params, c.start_time, c.run_id))


def _eligible(run) -> bool:
    """A finite model_val_loss, finite weights, and no note that the run has no servable model."""
    tags = run.data.tags
    return (math.isfinite(run.data.metrics.get(METRIC, math.nan)) and NONFINITE_TAG not in tags
            and MODEL_SKIPPED_TAG not in tags)


def _servable(run_id: str):
    """The run's logged model's info, or None when it has none that loads (no MLmodel, not READY)."""
    from mlflow.exceptions import MlflowException

    try:
        return model_info(f"runs:/{run_id}/model")
    except (MlflowException, OSError):
        return None


def find_best(experiment: str, parent_run_id: str | None = None, dataset: str | None = None, key: str | None = None,
              client=None) -> tuple[Candidate, tuple[str, ...]]:
    """The best candidate with a servable model, and the ids of better-ranked runs skipped for lacking one."""
    skipped = []
    for candidate in ranked(experiment, parent_run_id, dataset, key, client):
        if _servable(candidate.run_id) is not None:
            return candidate, tuple(skipped)
        skipped.append(candidate.run_id)
    scope = _scope(experiment, parent_run_id, dataset, key)
    raise PromotionError(f"no candidate in {scope}: the {len(skipped)} best runs have no servable logged model "
                         f"(first {skipped[0]}); train one with a model")
