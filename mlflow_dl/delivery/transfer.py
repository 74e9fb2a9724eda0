"""`mlflow-dl sync` for offline stores: a command's local store copied to the tracking server it was meant for.

Two passes, parents first: create each run on the server (original start time, name, new parent id), then send
the rest with original timestamps and steps, local run and model ids rewritten to the new ones. Idempotent: each
new id goes to `synced.jsonl` at once, the run is tagged `mlflow_dl.offline_run_id`, and resending is harmless.
A local run tagged `mlflow_dl.server_run_id` is filled in on the server under that id instead of created.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from urllib.parse import unquote, urlsplit

from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param, RunTag, ViewType

from mlflow_dl.delivery.offline_store import SERVER_RUN_TAG, OfflineStore, process_alive

ORIGIN_TAG = "mlflow_dl.offline_run_id"
MODEL_ORIGIN_TAG = "mlflow_dl.offline_model_id"
TEXT_SUFFIXES = (".csv", ".json", ".txt", ".yaml", ".yml", ".html", ".md")
IDS = re.compile(r"m-[0-9a-f]{32}|[0-9a-f]{32}")
UNFINISHED = ("RUNNING", "SCHEDULED")


class _Ledger:
    """synced.jsonl: what a store's sync already did ({"run": old, "new": id}, {"done": old}, models alike)."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, "synced.jsonl")
        self.ids: dict[str, str] = {}
        self.done: set[str] = set()
        if os.path.exists(self.path):
            for line in open(self.path, encoding="utf-8"):
                if not line.strip().endswith("}"):
                    continue  # a line cut by a kill
                record = json.loads(line)
                if "new" in record:
                    self.ids[record["old"]] = record["new"]
                elif "done" in record:
                    self.done.add(record["done"])

    def _write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def bind(self, old: str, new: str) -> None:
        self.ids[old] = new
        self._write({"old": old, "new": new})

    def finish(self, old: str) -> None:
        self.done.add(old)
        self._write({"done": old})


def _translate(text: str, ids: dict[str, str]) -> str:
    return IDS.sub(lambda m: ids.get(m.group(0), m.group(0)), text)


def _local_path(uri: str) -> str:
    return unquote(urlsplit(uri).path) if uri.startswith("file:") else uri


def _copy_translated(src: str, dst: str, ids: dict[str, str], extra: dict[str, str] | None = None) -> None:
    """A copy of the folder `src` where text files name the server's ids (and paths) instead of the store's."""
    shutil.copytree(src, dst)
    for folder, _, files in os.walk(dst):
        for name in files:
            if not (name.endswith(TEXT_SUFFIXES) or name == "MLmodel"):
                continue
            path = os.path.join(folder, name)
            try:
                text = open(path, encoding="utf-8").read()
            except UnicodeDecodeError:
                continue
            new = text
            for old, value in (extra or {}).items():  # before the ids: the old paths hold old ids
                new = new.replace(old, value)
            new = _translate(new, ids)
            if new != text:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(new)


def _depth(run, by_id) -> int:
    depth, parent = 0, run.data.tags.get("mlflow.parentRunId")
    while parent in by_id and depth < 100:
        depth, parent = depth + 1, by_id[parent].data.tags.get("mlflow.parentRunId")
    return depth


class StoreSync:
    """One store's copy to its server (`run()`), resumable after a kill."""

    def __init__(self, store: OfflineStore, server, echo=print):
        import mlflow

        self.store, self.server, self.echo = store, server, echo
        self.local = mlflow.MlflowClient(store.tracking_uri)
        self.ledger = _Ledger(store.folder)
        self.experiments: dict[str, str] = {}  # name -> the server's experiment id
        self.run_experiments: dict[str, str] = {}  # a server run -> its experiment id

    def run(self) -> int:
        """Copy every run not yet done; returns how many runs were sent now."""
        local_experiments = self.local.search_experiments(view_type=ViewType.ALL)
        # deleted runs stay behind (a trial keras-tuner ran again keeps only its last child)
        runs = self.local.search_runs([e.experiment_id for e in local_experiments], max_results=50000)
        names = {e.experiment_id: e for e in local_experiments}
        by_id = {r.info.run_id: r for r in runs}
        ordered = sorted(runs, key=lambda r: (_depth(r, by_id), r.info.start_time or 0))
        for run in ordered:  # first pass: every run exists, so ids can be translated
            self._server_run(run, names[run.info.experiment_id])
        sent = 0
        for run in ordered:
            if run.info.run_id not in self.ledger.done:
                self._send(run)
                self.ledger.finish(run.info.run_id)
                sent += 1
        return sent

    def _experiment(self, experiment) -> str:
        if experiment.name not in self.experiments:
            found = self.server.get_experiment_by_name(experiment.name)
            if found is None:
                tags = {k: v for k, v in experiment.tags.items() if not k.startswith("mlflow.note")}
                self.experiments[experiment.name] = self.server.create_experiment(experiment.name, tags=tags)
            else:
                self.experiments[experiment.name] = found.experiment_id
        return self.experiments[experiment.name]

    def _experiment_of(self, server_run_id: str) -> str:
        if server_run_id not in self.run_experiments:
            self.run_experiments[server_run_id] = self.server.get_run(server_run_id).info.experiment_id
        return self.run_experiments[server_run_id]

    def _server_run(self, run, experiment) -> str:
        old = run.info.run_id
        if old in self.ledger.ids:
            return self.ledger.ids[old]
        new = run.data.tags.get(SERVER_RUN_TAG)
        parent = run.data.tags.get("mlflow.parentRunId")
        if new is None:
            # a child goes where its parent is on the server (a parent the server had before it went away
            # is not in this store)
            experiment_id = (self._experiment_of(self.ledger.ids.get(parent, parent)) if parent
                             else self._experiment(experiment))
            found = self.server.search_runs([experiment_id], f"tags.`{ORIGIN_TAG}` = '{old}'",
                                            run_view_type=ViewType.ALL, max_results=1)
            if found:
                new = found[0].info.run_id
            else:
                tags = {ORIGIN_TAG: old}
                if parent:
                    tags["mlflow.parentRunId"] = self.ledger.ids.get(parent, parent)
                new = self.server.create_run(experiment_id, start_time=run.info.start_time, tags=tags,
                                             run_name=run.info.run_name).info.run_id
        self.ledger.bind(old, new)
        return new

    def _send(self, run) -> None:
        old, ids = run.info.run_id, self.ledger.ids
        new = ids[old]
        params = [Param(k, v) for k, v in run.data.params.items()]
        for i in range(0, len(params), 100):
            self.server.log_batch(new, params=params[i:i + 100], synchronous=True)
        points = [Metric(p.key, p.value, p.timestamp, p.step)
                  for key in run.data.metrics for p in self.local.get_metric_history(old, key)]
        for i in range(0, len(points), 1000):
            self.server.log_batch(new, metrics=points[i:i + 1000], synchronous=True)
        self._send_models(run, new)  # before the tags and files: they may name the models' new ids
        stands_in = SERVER_RUN_TAG in run.data.tags  # the server's run keeps its own name, source and user
        tags = [RunTag(k, _translate(v, ids)) for k, v in run.data.tags.items()
                if k != SERVER_RUN_TAG and not (stands_in and k.startswith("mlflow."))]
        for i in range(0, len(tags), 100):
            self.server.log_batch(new, tags=tags[i:i + 100], synchronous=True)
        if run.inputs and run.inputs.dataset_inputs:
            self.server.log_inputs(new, datasets=list(run.inputs.dataset_inputs))
        folder = _local_path(run.info.artifact_uri)
        if os.path.isdir(folder) and os.listdir(folder):
            with tempfile.TemporaryDirectory() as tmp:
                copy = os.path.join(tmp, "artifacts")
                _copy_translated(folder, copy, ids)
                self.server.log_artifacts(new, copy)
        status, end_time = run.info.status, run.info.end_time
        if status in UNFINISHED:  # its process died without ending it: KILLED at its last sign of life
            status = "KILLED"
            end_time = max([run.info.start_time or 0] + [p.timestamp for p in points])
        self.server.set_terminated(new, status, end_time=end_time or int(time.time() * 1000))

    def _send_models(self, run, new: str) -> None:
        outputs = run.outputs.model_outputs if run.outputs else []
        if not outputs:
            return
        server_run = self.server.get_run(new)
        linked = {o.model_id for o in (server_run.outputs.model_outputs if server_run.outputs else [])}
        for output in outputs:
            model = self.local.get_logged_model(output.model_id)
            new_id = self._server_model(model, server_run.info.experiment_id, new)
            if new_id not in linked:
                self.server.log_outputs(new, [LoggedModelOutput(new_id, output.step)])

    def _server_model(self, model, experiment_id: str, run_id: str) -> str:
        """The logged model on the server (created and uploaded once), READY like the local one."""
        old, ids = model.model_id, self.ledger.ids
        if old in ids:
            return ids[old]
        found = self.server.search_logged_models([experiment_id], f"tags.`{MODEL_ORIGIN_TAG}` = '{old}'",
                                                 max_results=1)
        if found:
            created = found[0]
        else:
            created = self.server.create_logged_model(
                experiment_id, name=model.name, source_run_id=run_id, params=model.params,
                tags={**{k: _translate(v, ids) for k, v in model.tags.items()}, MODEL_ORIGIN_TAG: old},
                model_type=model.model_type)
        ids[old] = created.model_id  # the files name it
        folder = _local_path(model.artifact_location)
        if os.path.isdir(folder):
            with tempfile.TemporaryDirectory() as tmp:
                copy = os.path.join(tmp, "model")
                _copy_translated(folder, copy, ids, {model.artifact_location: created.artifact_location})
                self.server.log_model_artifacts(created.model_id, copy)
        status = model.status if model.status != LoggedModelStatus.PENDING else LoggedModelStatus.FAILED
        self.server.finalize_logged_model(created.model_id, status)
        self.ledger.bind(old, created.model_id)
        return created.model_id


def server_uri(recorded: str) -> str:
    """The URI to send to: the environment's when it is the recorded one (the record keeps no password)."""
    import mlflow

    from mlflow_dl.delivery.uris import redact

    current = mlflow.get_tracking_uri()
    return current if redact(current) == recorded else recorded


def sync_store(store: OfflineStore, echo=print) -> int | None:
    """Copy one store to its server and delete it; None when its command still runs (left alone)."""
    import mlflow

    meta = store.meta()
    if not meta.get("complete") and process_alive(meta):
        echo(f"{os.path.basename(store.folder)}: its command (pid {meta.get('pid')}) still runs; left for later")
        return None
    sent = StoreSync(store, mlflow.MlflowClient(server_uri(store.server_uri)), echo).run()
    shutil.rmtree(store.folder, ignore_errors=True)
    return sent
