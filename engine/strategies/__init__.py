"""Strategies: what a round asks the teacher, and how the student trains.

A strategy fills in the round without changing its shape (engine/driver.py): it returns a plan
(engine/strategies/base.py) and registers itself by name. Baselines are strategies too, so
`llm2llm compare` runs them all through the same loop at the same budget: one module each.

Budget: `random`, `mixed` and `zerogen` send as many teacher requests (targets, each asked for
the same n_per_error rows, with the same top-up tries) as the budget-setting unit of the same
task and training seed sent in that round (`llm2llm`, else `s3`); without either in the job,
as many as their own student's errors. `seed_only` sends none, and trains once: its later
rounds would repeat round 0.

Without labelled seed rows (`s3` always; `zerogen` on a task with `n_seed: 0`), round 0 has
no student: its augment stage writes the synthetic seed (engine/stages/synthesize.py), and
round 1 trains on it.

A compare entry may add the LLM2LLM paper's ablation switches to a name
(`llm2llm+one_shot`, `llm2llm+mine_all`, `llm2llm+continue`; engine/config/strategy.py SWITCHES): the
variant is a unit of its own, under its full name, and only the plain name sets the budget.
"""

import importlib
import pkgutil

from engine.strategies.base import (REGISTRY, RoundPlan, RoundView, Strategy, keep_label_mix,
                                    register, seed_quota, strategy_class, take_random)
from engine.strategies.units import (Unit, build_strategy, needs_validation, plan_units,
                                     saved_units, unit_keys, unit_settings)

# Every module of this package is imported once, so each strategy's @register runs: a new
# built-in strategy is a module here and nothing else. One of your own outside the package is
# named in the config's `plugins` (engine/config/run.py), which imports it.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "RoundPlan", "RoundView", "Strategy", "Unit", "build_strategy",
           "keep_label_mix", "needs_validation", "plan_units", "register", "saved_units",
           "seed_quota", "strategy_class", "take_random", "unit_keys", "unit_settings"]
