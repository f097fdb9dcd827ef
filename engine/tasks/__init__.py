"""Task plug-ins: built-in presets and YAML-defined tasks, resolved to a Task object."""

from __future__ import annotations

from engine.config import TaskConfig, did_you_mean
from engine.tasks.arithmetic import ArithmeticTask
from engine.tasks.base import Parsed, PromptSet, Task, check_prompt_file
from engine.tasks.classification import ClassificationTask
from engine.tasks.math import MathTask
from engine.tasks.multiple_choice import MultipleChoiceTask
from engine.tasks.qa import QATask
from engine.tasks.presets import PRESETS
from engine.tasks.reviews import ReviewsTask

TASK_TYPES: dict[str, type[Task]] = {
    "math": MathTask,
    "classification": ClassificationTask,
    "arithmetic": ArithmeticTask,
    "reviews": ReviewsTask,
    "qa": QATask,
    "multiple_choice": MultipleChoiceTask,
}

__all__ = ["Parsed", "PromptSet", "Task", "TASK_TYPES", "resolve_task_config", "build_task", "check_tasks"]


def resolve_task_config(cfg: TaskConfig) -> TaskConfig:
    """Overlay the user's settings on the preset named by `cfg.name` (if any)."""
    preset = PRESETS.get(cfg.name, {})
    merged = dict(preset)
    for key in cfg.model_fields_set:
        value = getattr(cfg, key)
        if key == "data":  # merge per split so overriding only `train` keeps the preset `test`
            merged["data"] = {**preset.get("data", {}), **value.model_dump(exclude_unset=True)}
        else:
            merged[key] = value if not hasattr(value, "model_dump") else value.model_dump()
    return TaskConfig.model_validate(merged)


def build_task(cfg: TaskConfig, seed: int) -> Task:
    resolved = resolve_task_config(cfg)
    return TASK_TYPES[resolved.type](resolved, seed)


def check_tasks(cfgs: list[TaskConfig], seed: int) -> list[str]:
    """Every problem with the task definitions, for the preflight report."""
    problems = []
    for cfg in cfgs:
        if cfg.name not in PRESETS and cfg.type is None:
            hint = did_you_mean(cfg.name, PRESETS)
            problems.append(f"tasks.{cfg.name}: unknown task{hint}; built-in tasks are "
                            f"{sorted(PRESETS)}, or define one with `type: classification` "
                            f"(labels, fields, data) or `type: math`")
            continue
        resolved = resolve_task_config(cfg)
        file_problems = check_prompt_file(resolved, TASK_TYPES[resolved.type].family_of(resolved))
        if file_problems:
            problems += file_problems
            continue
        problems += TASK_TYPES[resolved.type](resolved, seed).check()
    return problems
