"""Promotion: the run with the lowest `model_val_loss` becomes the registered model's `champion`.

Only runs of one comparability key (fit/comparability.py) with finite weights and a servable model compete
(candidates.py). The winner is registered only when it beats the current champion by more than
`min_improvement`; the alias moves (registry stages are deprecated).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from mlflow_dl.errors import ConfigError, PromotionError
from mlflow_dl.registry.candidates import METRIC, Candidate, candidate, find_best, quote, tracking_client
from mlflow_dl.registry.model_checks import check_safe_load, input_columns, model_info
from mlflow_dl.tags import KEY_TAG

TAG_PREFIX = "mlflow_dl."


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


def _unhashed_note(winner: Candidate) -> str:
    """What a key over unread data means, said in promote's one line."""
    if not winner.unhashed:
        return ""
    return (f"; key {winner.key} names data whose contents were not hashed (a tf.data pipeline or a generator: "
            f"keyed by its element spec and size), so runs on other data of the same shapes share it")


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
    client = tracking_client()
    winner, skipped = find_best(experiment, parent_run_id, dataset, key, client)
    note = _unhashed_note(winner)
    info = model_info(f"runs:/{winner.run_id}/model")
    columns = input_columns(info)

    champion = _champion(client, model_name, alias)
    previous = None
    if champion is not None:
        previous = str(champion.version)
        if champion.run_id == winner.run_id:
            return Promotion(model_name, alias, winner.run_id, winner.value, previous, False, previous,
                             f"run {winner.run_id} is already {model_name}@{alias} (version {champion.version})"
                             f"{note}", skipped)
        champ = candidate(client.get_run(champion.run_id)) if champion.run_id else None
        champ_key = (champion.tags or {}).get(KEY_TAG) or (champ.key if champ is not None else "")
        champ_columns = input_columns(model_info(f"models:/{model_name}/{champion.version}"))
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
        found = client.search_model_versions(f"name = {quote(model_name)} and run_id = {quote(run_id)}")
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
    (client or tracking_client()).set_registered_model_alias(model_name, alias, version)
