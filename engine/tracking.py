"""Experiment tracking, opt-in (`tracking.backend: mlflow`): one MLflow run per unit (a run's
task; a compare's task/strategy/seed), holding the resolved config as params, every round's
metrics with the round as the step, and the run's report.html (and compare.json) as artifacts.

The run directory stays the record: the tracker copies what the stages wrote there
(`metrics.json` per round) and never feeds anything back. So it can catch up at any time: when
the job starts it logs every finished round the MLflow run lacks, after each round the new
ones. A resumed job finds its units' MLflow runs again (their ids are kept in
<run_dir>/tracking.json, and each run is tagged with its run_dir and unit) and logs each round
once: a round is logged when its `round` metric is in the run's history.

It talks to MLflow through MLflow's own client (`mlflow.MlflowClient`, from mlflow-skinny): a
tracking server (`http://...`) or a database; by default a SQLite file in the run_dir (MLflow's
plain-folder store is deprecated). A tracking server that cannot be reached when
the job starts stops it before any work (the user asked for tracking); one that fails later
costs a warning, and the next round or the next run logs what was missed.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
import urllib.request
from pathlib import Path

from engine import fs
from engine.config import RunConfig
from engine.errors import ConfigError
from engine.inspect import run_units, unit_metrics
from engine.storage import RunStorage

IDS_FILE = "tracking.json"
ROUND_KEY = "round"  # logged with every round; its history says which rounds are in
MAX_PARAMS_PER_CALL = 100  # MLflow's log_batch limit
PROBE_TIMEOUT_S = 5


def probe(uri: str) -> None:
    """A tracking server that does not answer its health check within seconds is refused
    before the job starts (MLflow's client would retry each call for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError([f"tracking.uri {uri!r}: no MLflow server answers there ({exc}); "
                           f"start it (`mlflow server --host 127.0.0.1 --port 5000`), fix "
                           f"tracking.uri, or set tracking.backend: none"]) from exc


def flatten(tree, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys, scalar values as text, lists as JSON."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    text = json.dumps(tree) if isinstance(tree, list) else str(tree)
    return {prefix.rstrip("."): text}


# The characters MLflow accepts in a metric name (mlflow/utils/validation.py), less "/" (a name
# that is not a clean relative path, "a/" or "..", is refused too), and its longest name: a
# batch with one name it refuses is refused whole.
_NOT_IN_METRIC_NAME = re.compile(r"[^\w.\- :]")
MAX_METRIC_NAME = 250


def round_metrics(metrics: dict) -> dict[str, float]:
    """The numbers of a round's metrics.json as MLflow metrics: top-level numbers, and the
    nested ones (`train.steps`, `rejected_by_reason.duplicate`, `usage.augment.requests`)
    dotted. Flags and texts are left out. Nested keys can be a task's labels or
    `test_answers`' "(none)", so characters MLflow refuses in a name become "_"."""
    out = {}

    def walk(value, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                name = _NOT_IN_METRIC_NAME.sub("_", str(k)).strip(".") or "_"
                walk(v, f"{key}.{name}" if key else name)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            out[key[:MAX_METRIC_NAME]] = float(value)

    walk(metrics, "")
    out.pop("round", None)  # the step; logged under ROUND_KEY last
    out.pop("train_seed", None)  # a param of the unit
    return out


class MlflowTracker:
    """One job's tracking: finds or makes each unit's MLflow run and logs what is new."""

    def __init__(self, cfg: RunConfig, log=print):
        from mlflow import MlflowClient

        self.cfg, self.log = cfg, log
        self.store = RunStorage(cfg.run_dir)
        self.uri = cfg.tracking.resolved_uri(cfg.run_dir)
        probe(self.uri)
        # A server that goes away mid-run costs a warning per round, not minutes of retries
        # per call (MLflow's default is 7 retries with exponential backoff); a user's own
        # settings win.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        self.client = MlflowClient(tracking_uri=self.uri)
        name = cfg.tracking.experiment_name(cfg.run_dir)
        try:
            found = self.client.get_experiment_by_name(name)
            self.experiment_id = found.experiment_id if found else \
                self.client.create_experiment(
                    name, artifact_location=cfg.tracking.artifact_location(cfg.run_dir))
        except Exception as exc:  # noqa: BLE001 - whatever the client raises, named for the user
            raise ConfigError([f"tracking.uri {self.uri!r}: MLflow did not answer ({exc}); start "
                               f"the tracking server, fix tracking.uri, or set tracking.backend: "
                               f"none"]) from exc
        self.run_ids: dict[str, str] = json.loads(
            self.store.read_text(self.store.path(IDS_FILE)) or "{}")

    # -- runs -----------------------------------------------------------------------------
    def _run_for(self, unit: str) -> str:
        """The unit's MLflow run: the one this run_dir recorded, else one tagged with this
        run_dir and unit (ids file lost), else a new one with the config as params."""
        run_id = self.run_ids.get(unit)
        if run_id is None:
            tags = f"tags.`llm2llm.run_dir` = '{self.cfg.run_dir}' and tags.`llm2llm.unit` = " \
                   f"'{unit}'"
            found = self.client.search_runs([self.experiment_id], filter_string=tags,
                                            max_results=1)
            run_id = found[0].info.run_id if found else self._new_run(unit)
            self.run_ids[unit] = run_id
            self.store.write_json(self.store.path(IDS_FILE), self.run_ids)
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")  # a resumed job
        return run_id

    def _new_run(self, unit: str) -> str:
        from mlflow.entities import Param

        parts = unit.split("/")
        tags = {"llm2llm.run_dir": self.cfg.run_dir, "llm2llm.unit": unit, "task": parts[0]}
        if len(parts) == 3:  # a compare's task/strategy/seed_N
            tags.update({"strategy": parts[1], "train_seed": parts[2].removeprefix("seed_")})
        run_id = self.client.create_run(self.experiment_id, run_name=unit, tags=tags) \
            .info.run_id
        params = [Param(k, v[:6000]) for k, v in
                  sorted(flatten(self.cfg.model_dump(mode="json")).items())]
        for start in range(0, len(params), MAX_PARAMS_PER_CALL):
            self.client.log_batch(run_id, params=params[start:start + MAX_PARAMS_PER_CALL])
        return run_id

    # -- logging --------------------------------------------------------------------------
    def sync(self) -> None:
        """Log every finished round of every unit that its MLflow run does not hold yet."""
        try:
            keys, rounds = run_units(self.cfg.run_dir)
            for unit in keys:
                self._sync_unit(unit, rounds)
        except Exception as exc:  # noqa: BLE001 - tracking must not stop a run; it catches up
            self.log(f"warning: tracking: could not log to MLflow at {self.uri} ({exc}); the "
                     f"next round or run logs what was missed")

    def _sync_unit(self, unit: str, rounds: int) -> None:
        from mlflow.entities import Metric

        done = unit_metrics(self.store, unit, rounds)
        if not done:
            return
        run_id = self._run_for(unit)
        logged = {m.step for m in self.client.get_metric_history(run_id, ROUND_KEY)}
        now = int(time.time() * 1000)
        for m in done:
            r = int(m["round"])
            if r in logged:
                continue
            metrics = [Metric(k, v, now, r) for k, v in sorted(round_metrics(m).items())]
            metrics.append(Metric(ROUND_KEY, float(r), now, r))  # last: the round is in
            self.client.log_batch(run_id, metrics=metrics)

    def finish(self, failed: bool = False) -> None:
        """Log the report (and a compare's table) into every unit's run and close them."""
        try:
            self.sync()
            with tempfile.TemporaryDirectory() as copies:
                # MLflow uploads local files: a run_dir on remote storage (S3) is copied first
                local = []
                for name in ("report.html", "compare.json"):
                    if self.store.exists(self.store.path(name)):
                        local.append(Path(copies) / name)
                        local[-1].write_bytes(fs.read_bytes(self.store.fs, self.store.path(name)))
                for unit, run_id in self.run_ids.items():
                    for path in local:
                        self.client.log_artifact(run_id, str(path))
                    self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
        except Exception as exc:  # noqa: BLE001 - the run is done; its files are in run_dir
            self.log(f"warning: tracking: could not finish the MLflow runs at {self.uri} "
                     f"({exc})")


def open_tracker(cfg: RunConfig, log=print) -> MlflowTracker | None:
    """The job's tracker, or None when tracking is off."""
    if cfg.tracking.backend == "none":
        return None
    return MlflowTracker(cfg, log=log)
