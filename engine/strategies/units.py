"""The units of a job, listed in one place: a task under a strategy with a training seed.

A plain run has one unit per task, under the task's name; a compare has strategies x seeds
per task, under <task>/<variant>/seed_<s>. `unit_keys` works on plain data, so `status`,
`inspect` and the report list a saved run's units without building its tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import RunConfig, StrategyConfig, TaskConfig, import_plugins, strategy_variant
from engine.strategies.base import Strategy, strategy_class
from engine.tasks import Task


@dataclass(frozen=True)
class Unit:
    """One line of a job. `key` is its folder under run_dir; `variant` is the strategy as the
    compare lists it, switches included."""

    task: Task
    strategy: Strategy
    train_seed: int
    key: str
    variant: str = ""

    @property
    def sets_budget(self) -> bool:
        """Whether this unit's targets are the budget its task-seed's baselines match: the
        plain (switch-free) unit of a budget-setting strategy, the first in run order."""
        return self.strategy.budget_rank is not None \
            and "+" not in (self.variant or self.strategy.name)

    @property
    def settings(self) -> StrategyConfig:
        return self.strategy.settings


def _budget_rank(spec: str) -> float:
    """Run order within a seed: budget setters first, by rank (llm2llm, then s3), so the
    baselines that match their budget run after them in every round; the rest as listed."""
    rank = strategy_class(spec).budget_rank
    return rank if rank is not None and "+" not in spec else float("inf")


def unit_keys(task: str, compare: dict | None, strategy: str,
              seed: int) -> list[tuple[str, int, str]]:
    """(variant, training seed, folder key) of a task's units, in run order."""
    if not compare:
        return [(strategy, seed, task)]
    names = sorted(compare["strategies"], key=_budget_rank)
    return [(name, s, f"{task}/{name}/seed_{s}") for s in compare["seeds"] for name in names]


def unit_settings(cfg: RunConfig, task: TaskConfig) -> list[tuple[str, int, str, StrategyConfig]]:
    """(variant, training seed, key, strategy settings) of a task's units: the job's (or the
    task's own) strategy settings with each compare entry's name and switches."""
    base = task.strategy or cfg.strategy
    compare = cfg.compare.model_dump() if cfg.compare else None
    return [(name, seed, key,
             base.model_copy(update=strategy_variant(name)) if compare else base)
            for name, seed, key in unit_keys(task.name, compare, base.name, cfg.seed)]


def needs_validation(cfg: RunConfig, task: TaskConfig) -> bool:
    """Whether any unit of the task mines the real validation rows (s3, +mine_validation), or
    training chooses its epoch on them: only then are they read and set aside."""
    return cfg.train.select_epoch == "validation" or any(
        s.mine_from == "validation" or s.train_on_validation
        for *_, s in unit_settings(cfg, task))


def saved_units(config: dict) -> list[tuple[str, dict]]:
    """(folder key, strategy settings) of every unit of a saved run, in run order, from the
    plain config dict of its config.yaml."""
    import_plugins(config.get("plugins") or [])  # the run's own strategies, if any
    units = []
    compare = config.get("compare")
    for task in config.get("tasks", []):
        own = task.get("strategy") or config.get("strategy") or {}
        for name, _, key in unit_keys(task["name"], compare, own.get("name", "llm2llm"), 0):
            units.append((key, {**own, **(strategy_variant(name) if compare else {})}))
    return units


def build_strategy(settings: StrategyConfig) -> Strategy:
    return strategy_class(settings.name)(settings)


def plan_units(cfg: RunConfig, tasks: list[Task]) -> list[Unit]:
    """The job's units, in the order a round runs them."""
    return [Unit(task, build_strategy(settings), seed, key, name)
            for task in tasks for name, seed, key, settings in unit_settings(cfg, task.cfg)]
