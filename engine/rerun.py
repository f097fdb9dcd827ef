"""Rerun planning: which settings changed since a run was saved, and which stages that redoes.

The answers come from the stage declarations (STAGE_INPUTS, OPERATIONAL in
engine/stages/__init__.py); nothing here knows about particular settings.
"""

from __future__ import annotations

import fnmatch

from engine.config import RunConfig
from engine.provenance import prompt_hashes, read_run_record
from engine.stages import OPERATIONAL, STAGE_INPUTS, STAGES


def changed_fields(cfg: RunConfig) -> list[str]:
    """Settings (and prompt templates, as `prompts.<task>.<role>`) that differ from the run
    saved in run_dir and would change what finished stages produced. Operational settings are
    not counted; a key the saved record lacks (added by a newer engine) counts only where it
    is set away from its default, which is what the older engine did."""
    saved = read_run_record(cfg.run_dir)
    if saved is None:
        return []
    diffs = _diff(_with_defaults(saved.get("config", {})), cfg.model_dump(mode="json"))
    diffs += _diff(saved.get("prompts", {}), prompt_hashes(cfg), "prompts.")
    return sorted(d for d in diffs if not any(fnmatch.fnmatchcase(d, p) for p in OPERATIONAL))


def first_affected_stage(changed: str) -> str:
    """The first stage of a round that declares `changed` among its inputs; later stages, and
    all later rounds, depend on it. Undeclared: the first stage, never too little."""
    for stage in STAGES:
        if any(fnmatch.fnmatchcase(changed, p) for p in STAGE_INPUTS[stage]):
            return stage
    return STAGES[0]


def affected_stages(cfg: RunConfig, changed: list[str]) -> dict[str, str]:
    """task -> first affected stage of round 0. A task's own setting (`tasks.<i>.`) or prompt
    (`prompts.<task>.`) affects that task only."""
    earliest: dict[str, str] = {}
    for name in changed:
        for task in _tasks_of(cfg, name):
            stage = first_affected_stage(name)
            if task not in earliest or STAGES.index(stage) < STAGES.index(earliest[task]):
                earliest[task] = stage
    return earliest


def _tasks_of(cfg: RunConfig, changed: str) -> list[str]:
    parts = changed.split(".")
    if parts[0] == "tasks" and len(parts) > 2 and parts[1].isdigit():
        return [cfg.tasks[int(parts[1])].name]
    names = [t.name for t in cfg.tasks]
    if parts[0] == "prompts" and len(parts) > 2 and parts[1] in names:
        return [parts[1]]
    return names


def _with_defaults(config: dict) -> dict:
    """A saved config with the fields it predates at their defaults; as saved where it no
    longer validates (a field since removed): its own keys are compared all the same."""
    try:
        return RunConfig.model_validate(config).model_dump(mode="json")
    except ValueError:
        return config


def _diff(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = set(old)  # a key only in `new` is a field this run predates
        return [d for k in keys for d in _diff(old.get(k), new.get(k), f"{prefix}{k}.")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in _diff(a, b, f"{prefix}{i}.")]
    return [] if old == new else [prefix.rstrip(".")]
