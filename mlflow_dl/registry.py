"""Promotion: the run with the lowest `model_val_loss` becomes the registered model's `champion`.

Only runs of one comparability key (tracking.comparability) with finite weights and a servable model compete;
the pick is server-side queries, never a download of every run. The winner is registered only when it beats
the current champion by more than `min_improvement`; the alias moves (registry stages are deprecated).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass, field

from mlflow_dl.errors import ConfigError, PromotionError
from mlflow_dl.tags import (DATASET_TAG, DIGEST_PART_TAG, KEY_TAG, MODEL_SKIPPED_TAG, NONFINITE_TAG, PRUNED_TAG,
                            REFINES_TAG)

METRIC = "model_val_loss"
TOP = 50  # rows fetched per query; enough to see the ties and a few runs without a servable model
MAX_KEYS = 20  # keys listed when a scope holds several
TAG_PREFIX = "mlflow_dl."


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


@dataclass(frozen=True)
class Promotion:
    """What `promote` did: the winner, the version the alias points at, and why."""

    model_name: str
    alias: str
    run_id: str
    value: float
    version: str | None  # version of the winner (None when it was not registered)
    moved: bool  # the alias now points at the winner's version (and did not before)
    previous_version: str | None
    message: str
    skipped: tuple[str, ...] = field(default_factory=tuple)  # better runs without a servable model


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _candidate(run) -> Candidate:
    params, tags = run.data.params, run.data.tags
    try:
        total = int(params.get("model.total_params", ""))
    except ValueError:
        total = 2**62  # unknown size loses every tie
    return Candidate(run_id=run.info.run_id, value=float(run.data.metrics.get(METRIC, math.inf)), total_params=total,
                     start_time=int(run.info.start_time or 0),
                     dataset=tags.get(DATASET_TAG) or params.get("data.dataset", "?"), key=tags.get(KEY_TAG, ""),
                     pruned=PRUNED_TAG in tags, unhashed="unhashed:" in tags.get(DIGEST_PART_TAG, ""))


def _unhashed_note(winner: Candidate) -> str:
    """What a key over unread data means, said in promote's one line."""
    if not winner.unhashed:
        return ""
    return (f"; key {winner.key} names data whose contents were not hashed (a tf.data pipeline or a generator: "
            f"keyed by its element spec and size), so runs on other data of the same shapes share it")


def _quote(value: str) -> str:
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
        where.append(f"tags.`mlflow.parentRunId` = {_quote(parent_run_id)}")
    if dataset:
        where.append(f"tags.`{DATASET_TAG}` = {_quote(dataset)}")
    if key:
        where.append(f"tags.`{KEY_TAG}` = {_quote(key)}")
    return where


def _keys(client, experiment_id: str, where: list[str], seen: list[str]) -> list[str]:
    """Every key in scope, one single-row query per key beyond those already `seen` (server-side)."""
    keys = list(seen)
    while len(keys) <= MAX_KEYS:
        others = [f"tags.`{KEY_TAG}` != {_quote(k)}" for k in keys]
        found = client.search_runs([experiment_id], filter_string=" and ".join(where + others), max_results=1)
        if not found:
            break
        keys.append(found[0].data.tags[KEY_TAG])
    return keys


def _several_keys(client, experiment_id: str, where: list[str], keys: list[str], scope: str) -> PromotionError:
    """One line: the keys found, each with its data set names and run count."""
    parts = []
    for k in keys[:MAX_KEYS]:
        where_k = " and ".join(where + [f"tags.`{KEY_TAG}` = {_quote(k)}"])
        found = client.search_runs([experiment_id], filter_string=where_k, max_results=50000)
        names = sorted({_candidate(r).dataset for r in found})
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
    client = client or _client()
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
    return sorted(map(_candidate, filter(_eligible, runs)),
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
        return _model_info(f"runs:/{run_id}/model")
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


def _model_info(uri: str):
    import mlflow

    return mlflow.models.get_model_info(uri)


def input_columns(info) -> tuple[str, ...] | None:
    """The raw columns a logged model takes (mlflow-dl metadata, else the signature's names); for a
    model on named tensors, each input's name, type and shape ("a: float32(-1, 3)"), so that a
    champion on other shapes is a signature change."""
    meta = (info.metadata or {}).get("mlflow_dl") or {}
    if meta.get("input_columns"):
        return tuple(meta["input_columns"])
    if meta.get("input_tensors"):  # the float32 specs the served model checks requests against
        return tuple(f"{t['name'] or 'input'}: {t['dtype']}{tuple(t['shape'])}" for t in meta["input_tensors"])
    schema = info.signature.inputs if info.signature is not None else None
    if schema is not None and schema.is_tensor_spec():
        return tuple(f"{spec.name or 'input'}: {spec.type}{spec.shape}" for spec in schema.inputs)
    if schema is not None and schema.has_input_names():
        return tuple(schema.input_names())
    return None


def check_safe_load(run_id: str, artifact_path: str = "model") -> None:
    """Load the run's Keras file with safe_mode=True; Lambda layers or unknown custom objects refuse."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        root = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{artifact_path}", dst_path=tmp)
        files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".keras")]
        if not files:
            raise PromotionError(f"run {run_id} has no Keras model under '{artifact_path}'; "
                                 f"expected a model logged by mlflow-dl")
        import keras

        custom = _shipped_classes(run_id, root)
        for path in files:
            try:
                keras.saving.load_model(path, custom_objects=custom, compile=False, safe_mode=True)
            except Exception as exc:  # Lambda layers raise ValueError, unknown objects TypeError
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise PromotionError(
                    f"run {run_id}: {os.path.basename(path)} does not load with keras safe_mode=True "
                    f"({type(exc).__name__}: {first[:300]}); expected a model without Lambda layers "
                    f"or unregistered custom objects") from None


def _shipped_classes(run_id: str, root: str) -> dict:
    """The classes a model names in its config as custom objects (a subclassed model, custom layers),
    imported from the code it ships, as the served model does: Keras cannot load it without them."""
    import importlib
    import sys

    from mlflow.models import Model

    conf = Model.load(root).flavors.get("python_function", {})
    where = (conf.get("config") or {}).get("custom_objects") or {}  # the pyfunc's model_config
    if not where:
        return {}
    code = os.path.join(root, conf.get("code") or "code")
    sys.path.insert(0, code)
    try:
        return {name: getattr(importlib.import_module(w.partition(":")[0]), w.partition(":")[2], None)
                for name, w in where.items()}
    except ImportError as exc:
        raise PromotionError(f"run {run_id}: the module of the model's classes {sorted(where)} does not import "
                             f"({exc}); expected it in the model's code/ or installed") from None
    finally:
        sys.path.remove(code)


def _champion(client, model_name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
    except MlflowException:
        return None
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def _validate(model_name: str, alias: str, min_improvement: float) -> None:
    if not model_name or not str(model_name).strip():
        raise ConfigError(f"model_name={model_name!r} is invalid; expected a registered model name")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", alias or "") or alias.lower() == "latest" \
            or re.fullmatch(r"[vV]\d+", alias):
        raise ConfigError(f"alias={alias!r} is invalid; expected a name such as 'champion' "
                          f"(letters, digits, _ and -, not 'latest' nor v<number>)")
    if not (min_improvement >= 0 and math.isfinite(min_improvement)):
        raise ConfigError(f"min_improvement={min_improvement!r} is invalid; expected a value >= 0")


def promote(experiment: str, model_name: str, parent_run_id: str | None = None, alias: str = "champion",
            min_improvement: float = 0.0, allow_signature_change: bool = False,
            dataset: str | None = None, key: str | None = None, allow_key_change: bool = False) -> Promotion:
    """Register the best run of `experiment` (or of one sweep, data set or key) and point `alias` at it.

    The alias moves only when the winner beats the current champion's model_val_loss by more
    than `min_improvement`. The champion keeps its comparability key (a winner of another key is
    refused unless `allow_key_change`) and its input columns (unless `allow_signature_change`).
    Idempotent: a run already registered is not registered again.
    """
    _validate(model_name, alias, min_improvement)
    client = _client()
    winner, skipped = find_best(experiment, parent_run_id, dataset, key, client)
    note = _unhashed_note(winner)
    info = _model_info(f"runs:/{winner.run_id}/model")
    columns = input_columns(info)

    champion = _champion(client, model_name, alias)
    previous = None
    if champion is not None:
        previous = str(champion.version)
        if champion.run_id == winner.run_id:
            return Promotion(model_name, alias, winner.run_id, winner.value, previous, False, previous,
                             f"run {winner.run_id} is already {model_name}@{alias} (version {champion.version})"
                             f"{note}", skipped)
        champ = _candidate(client.get_run(champion.run_id)) if champion.run_id else None
        champ_key = (champion.tags or {}).get(KEY_TAG) or (champ.key if champ is not None else "")
        champ_columns = input_columns(_model_info(f"models:/{model_name}/{champion.version}"))
        if champ_columns != columns and not allow_signature_change:
            raise PromotionError(
                f"the input signature of run {winner.run_id} ({len(columns or ())} columns) differs from "
                f"{model_name}@{alias} version {champion.version} ({len(champ_columns or ())} columns); "
                f"pass --allow-signature-change to promote it anyway")
        if champ_key != winner.key and not allow_key_change:
            raise PromotionError(
                f"{model_name}@{alias} version {champion.version} has comparability key {champ_key or 'none'} "
                f"({champ.dataset if champ else '?'}) but the best run {winner.run_id} has {winner.key} "
                f"({winner.dataset}); losses of other data, loss, scaling or split are not compared; "
                f"pass --key {champ_key} to rank its runs, or --allow-key-change to replace it")
        # another key (allowed): the values measure different things, so the new key's best takes the alias
        champ_value = champ.value if champ is not None and champ_key == winner.key else math.inf
        if not champ_value - winner.value > min_improvement:
            return Promotion(model_name, alias, winner.run_id, winner.value, None, False, previous,
                             f"kept {model_name}@{alias} = version {champion.version} ({METRIC}={champ_value:.6g}); "
                             f"best run {winner.run_id} has {winner.value:.6g}, not better by more than "
                             f"min_improvement={min_improvement}{note}", skipped)

    version = _existing_version(client, model_name, winner.run_id)
    if version is None:
        check_safe_load(winner.run_id)
        version = _register(client, model_name, winner, previous)
    client.set_registered_model_alias(model_name, alias, version)
    note = (f" ({len(skipped)} better runs without a servable model skipped)" if skipped else "") + note
    return Promotion(model_name, alias, winner.run_id, winner.value, version, True, previous,
                     f"{model_name}@{alias} -> version {version} (run {winner.run_id}, {METRIC}={winner.value:.6g}, "
                     f"key {winner.key}{'' if previous is None else f', was version {previous}'}){note}", skipped)


def _existing_version(client, model_name: str, run_id: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = {_quote(model_name)} and run_id = {_quote(run_id)}")
    except MlflowException:
        return None
    return min((str(v.version) for v in found), key=int, default=None)


def _register(client, model_name: str, winner: Candidate, previous: str | None) -> str:
    import mlflow

    tags = {f"{TAG_PREFIX}source_run": winner.run_id, f"{TAG_PREFIX}metric": METRIC,
            f"{TAG_PREFIX}value": repr(winner.value), f"{TAG_PREFIX}dataset": winner.dataset,
            KEY_TAG: winner.key, f"{TAG_PREFIX}previous_champion": previous or "none"}
    outputs = client.get_run(winner.run_id).outputs
    logged = [o.model_id for o in (outputs.model_outputs if outputs else [])]
    uri = f"models:/{logged[-1]}" if len(logged) == 1 else f"runs:/{winner.run_id}/model"
    version = mlflow.register_model(uri, model_name, tags=tags)
    return str(version.version)


def move_alias(model_name: str, alias: str, version: str, client=None) -> None:
    """Point `alias` at `version` (what promote does once it has decided)."""
    (client or _client()).set_registered_model_alias(model_name, alias, version)
