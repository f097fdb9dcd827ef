"""Strategies: what a round asks the teacher, and how the student trains.

A strategy fills in the round without changing its shape (engine/driver.py). Baselines are
strategies too, so `llm2llm compare` runs them all through the same loop at the same budget:
one small module each.

Budget: `random`, `mixed` and `zerogen` send as many teacher requests (targets, each asked for the same
n_per_error rows, with the same top-up tries) as the `llm2llm` unit of the same task and
training seed sent in that round (without one, the `s3` unit); without either in the job, as
many as their own student's errors. `seed_only` sends none, and trains once: its later rounds
would repeat round 0.

Without labelled seed rows (`s3` always; `zerogen` on a task with `n_seed: 0`), round 0 has
no student: its augment stage writes the synthetic seed (engine/stages/synthesize.py), and
round 1 trains on it.

A compare entry may add the LLM2LLM paper's ablation switches to a name
(`llm2llm+one_shot`, `llm2llm+mine_all`, `llm2llm+continue`; engine/config.py SWITCHES): the
variant is a unit of its own, under its full name, and only plain `llm2llm` sets the budget.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pyarrow as pa

from engine.config import RunConfig, StrategyConfig, strategy_variant
from engine.tasks import Task


@dataclass(frozen=True)
class RoundView:
    """What a strategy sees when it picks a round's teacher targets."""

    errors: pa.Table  # the mined rows (EXAMPLE, trigger_prediction = the wrong output)
    mining: pa.Table  # every mining row, trigger_prediction = the student's output
    budget: int | None  # targets the matched llm2llm unit asked about this round, if any
    rng: random.Random  # seeded by (task, training seed, round)
    task: str = ""  # the task's name and label names (zerogen writes from them alone)
    labels: tuple[str, ...] = ()


class Strategy:
    """Base: LLM2LLM's choices. Subclasses override what differs."""

    name = "llm2llm"
    uses_teacher = True
    uses_seed = True  # trains on the task's labelled seed rows (s3 writes its own)
    explains = False  # s3: round 0's targets are rationales the teacher lists first

    def __init__(self, settings: StrategyConfig):
        self.settings = settings

    def targets(self, view: RoundView) -> pa.Table:
        """The rows the teacher is asked to write new examples like (EXAMPLE schema)."""
        return self.aimed(view)

    def aimed(self, view: RoundView) -> pa.Table:
        """The errors, or with `keep_label_mix` as many rows kept to the mined rows' label
        mix (see keep_label_mix)."""
        if self.settings.keep_label_mix and view.labels:
            return keep_label_mix(view.errors, view.mining, view.rng)
        return view.errors

    def rounds(self, configured: int) -> int:
        return configured

    def seed_targets(self, view: RoundView, rationales: pa.Table) -> pa.Table:
        """Round 0's targets for a unit with no labelled seed to train on (S3's setting): what
        its synthetic seed is written from. Only s3 and zerogen can start so."""
        raise NotImplementedError(f"strategy {self.name} needs labelled seed rows")


@dataclass(frozen=True)
class Unit:
    """One line of a job: a task under a strategy with a training seed. `key` is its folder
    under run_dir: the task name in a plain run, <task>/<variant>/seed_<s> in a compare.
    `variant` is the strategy as the compare lists it, switches included."""

    task: Task
    strategy: Strategy
    train_seed: int
    key: str
    variant: str = ""

    @property
    def sets_budget(self) -> bool:
        """The plain llm2llm unit's targets are the budget its task-seed's baselines match;
        without one in the job, the plain s3 unit's (zerogen then writes as many rows)."""
        return (self.variant or self.strategy.name) in ("llm2llm", "s3")

    @property
    def settings(self) -> StrategyConfig:
        return self.strategy.settings


def build_strategy(settings: StrategyConfig) -> Strategy:
    from engine.strategies.mixed import Mixed
    from engine.strategies.random_rows import RandomRows
    from engine.strategies.s3 import S3
    from engine.strategies.seed_only import SeedOnly
    from engine.strategies.zerogen import ZeroGen

    kinds = {"llm2llm": Strategy, "seed_only": SeedOnly, "random": RandomRows, "mixed": Mixed,
             "zerogen": ZeroGen, "s3": S3}
    return kinds[settings.name](settings)


def unit_keys(task: str, compare: dict | None, strategy: str,
              seed: int) -> list[tuple[str, int, str]]:
    """(strategy, training seed, folder key) of a task's units. A plain run has one, under
    the task's name; a compare has strategies x seeds, llm2llm first within each seed so the
    baselines that match its budget run after it in every round. Plain data in, so `status`
    can list the units of a saved run without building its tasks. s3 comes next: it sets the
    budget where there is no llm2llm unit."""
    if not compare:
        return [(strategy, seed, task)]
    names = sorted(compare["strategies"], key=lambda n: (n != "llm2llm", n != "s3"))
    return [(name, s, f"{task}/{name}/seed_{s}") for s in compare["seeds"] for name in names]


def saved_units(config: dict) -> list[tuple[str, dict]]:
    """(folder key, strategy settings) of every unit of a saved run, in run order, from the
    plain config dict of its config.yaml (`status` and `inspect` read runs this way, without
    building tasks)."""
    units = []
    compare = config.get("compare")
    for task in config.get("tasks", []):
        own = task.get("strategy") or config.get("strategy") or {}
        for name, _, key in unit_keys(task["name"], compare, own.get("name", "llm2llm"), 0):
            units.append((key, {**own, **(strategy_variant(name) if compare else {})}))
    return units


def plan_units(cfg: RunConfig, tasks: list[Task]) -> list[Unit]:
    """The job's units, in the order a round runs them."""
    compare = cfg.compare.model_dump() if cfg.compare else None
    units = []
    for task in tasks:
        base = task.cfg.strategy or cfg.strategy
        for name, seed, key in unit_keys(task.name, compare, base.name, cfg.seed):
            settings = base.model_copy(update=strategy_variant(name) if compare else {})
            units.append(Unit(task, build_strategy(settings), seed, key, name))
    return units


def take_random(table: pa.Table, n: int, rng: random.Random) -> pa.Table:
    """n rows drawn without replacement (all of them if there are fewer), in table order."""
    if n >= table.num_rows:
        return table
    return table.take(sorted(rng.sample(range(table.num_rows), n)))


def keep_label_mix(errors: pa.Table, mining: pa.Table, rng: random.Random) -> pa.Table:
    """As many targets as there are errors, spread over the labels as the mined rows are
    (largest remainders), each label's share filled with its errors first, then with rows of
    that label the student got right. A weak student's errors lean to one label (it answers
    the other for nearly everything); aimed at them alone, a round writes rows of that label
    only and the next student leans the other way (measured on RTE, README)."""
    n = errors.num_rows
    if n == 0 or mining.num_rows == 0:
        return errors
    labels = mining.column("label").to_pylist()
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    exact = {label: n * c / len(labels) for label, c in counts.items()}
    share = {label: int(x) for label, x in exact.items()}
    for label in sorted(exact, key=lambda k: (share[k] - exact[k], k))[:n - sum(share.values())]:
        share[label] += 1
    ids = mining.column("id").to_pylist()
    by_id = {row_id: i for i, row_id in enumerate(errors.column("id").to_pylist())}
    picked = []
    for label in sorted(share):
        mine = [i for i, row_label in enumerate(labels) if row_label == label]
        missed = [i for i in mine if ids[i] in by_id]
        right = [i for i in mine if ids[i] not in by_id]
        take = rng.sample(missed, min(share[label], len(missed)))
        take += rng.sample(right, min(share[label] - len(take), len(right)))
        picked += take
    # errors keep their own rows (trigger_prediction: the wrong answer); others the mining row
    rows = [errors.slice(by_id[ids[i]], 1) if ids[i] in by_id else mining.slice(i, 1)
            for i in sorted(picked)]
    return pa.concat_tables(rows) if rows else errors.slice(0, 0)

