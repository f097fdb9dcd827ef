"""What a strategy is: a class that plans a round's teacher requests, registered once by name.

A strategy decides, the stages execute (engine/stages/augment.py): `plan` returns a RoundPlan
(targets, rows per target, the prompt set, the real rows shown and compared), and the class's
attributes say what it needs from a task and how the job treats it. The registry is what the
config's choices, `llm2llm compare --help`, status, the report and preflight read, so a new
strategy is one module with `@register` on its class (and its tests).
"""

from __future__ import annotations

import difflib
import math
import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from engine.records import EXAMPLE, SEED

if TYPE_CHECKING:
    from engine.config import StrategyConfig
    from engine.tasks import PromptSet, Task

REGISTRY: dict[str, type["Strategy"]] = {}


def register(cls: type["Strategy"]) -> type["Strategy"]:
    """Class decorator: the strategy is known by `cls.name` from now on."""
    if not cls.name or "+" in cls.name:
        raise ValueError(f"{cls.__name__}: a strategy needs a `name` without '+'")
    if REGISTRY.get(cls.name, cls) is not cls:
        raise ValueError(f"strategy {cls.name!r} is registered twice ({REGISTRY[cls.name]} "
                         f"and {cls}); give one of them another name")
    REGISTRY[cls.name] = cls
    return cls


def strategy_class(spec: str) -> type["Strategy"]:
    """The class of a strategy name, or of a compare entry `name+switch...`; KeyError names
    the registered ones."""
    name = spec.split("+", 1)[0]
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise KeyError(f"unknown strategy {name!r}; {hint}use one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


@dataclass(frozen=True)
class RoundView:
    """What a strategy sees when it plans a round."""

    errors: pa.Table  # the mined rows (EXAMPLE, trigger_prediction = the wrong output)
    mining: pa.Table  # every mining row, trigger_prediction = the student's output
    budget: int | None  # targets the matched unit (llm2llm, else s3) asked about this round
    rng: random.Random  # seeded by (task, training seed, round)
    task: str = ""  # the task's name and label names (zerogen writes from them alone)
    labels: tuple[str, ...] = ()
    round: int = 0
    train_set: pa.Table | None = None  # the rows this round trained on (seed + accepted)
    validation: pa.Table | None = None  # the task's real validation rows (empty if unused)
    # rows per target the matched unit asked for (s3: one per error), which a baseline asks
    # for too unless its own rows_per_error says otherwise
    budget_quota: int | None = None


@dataclass(frozen=True)
class RoundPlan:
    """A round's teacher requests as the augment stage executes them."""

    targets: pa.Table | None  # rows to write new examples like (None: rationales first)
    quota: int  # rows asked for, and at most accepted, per target
    prompts: "PromptSet"  # the task's prompt file the requests are rendered from
    demo_pool: pa.Table  # real rows a request may show as a worked example
    style_texts: list[str]  # real texts whose shape a candidate must have
    rationales_per_label: int = 0  # > 0: ask for rationales first; they are the targets
    label_rows: pa.Table | None = None  # real labelled rows a candidate's label is judged by
    repeats: int = 1  # each rationale asked about this many times (distinct draws), so that
    # many rows per rationale need not fit one answer
    # a pair task's real first texts (premises) the teacher writes only second texts on
    # (strategy.real_first_text); empty: it writes whole examples
    first_texts: tuple[str, ...] = ()
    # the task's real texts the round may read (seed and validation rows): a word one of them
    # uses is the task's own, not talk about the task (the self_description gate)
    real_texts: tuple[str, ...] = ()


class Strategy:
    """Base: LLM2LLM's choices (engine/strategies/llm2llm.py). Subclasses override what
    differs and register themselves."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for `compare --help` and `llm2llm config`
    uses_teacher: ClassVar[bool] = True
    uses_seed: ClassVar[bool] = True  # trains on the task's labelled seed rows
    synthesizes_seed: ClassVar[bool] = False  # can write its own seed when n_seed is 0
    explains: ClassVar[bool] = False  # a synthetic seed starts with rationales (S3)
    # the templates it renders writing a pair's second text only, on a real first one
    # (strategy.real_first_text); empty: it always writes whole examples
    second_text_templates: ClassVar[tuple[str, ...]] = ()
    builtin_pair_prompts: ClassVar[str] = "llm2llm/pair.yaml"  # where they are shipped
    # Its plain unit's targets are the budget its task-seed's baselines match; where a job
    # has several such strategies, the lowest rank sets it (llm2llm 0, s3 1). None: never.
    budget_rank: ClassVar[int | None] = None
    takes_switches: ClassVar[bool] = True  # accepts the ablation switches (config.SWITCHES)
    # Its targets are the round's errors (Strategy.aimed), so the switches that shape which
    # errors are asked about (+label_mix, +stratify) apply; False: it draws them otherwise.
    targets_errors: ClassVar[bool] = True
    own_switches: ClassVar[tuple[str, ...]] = ()  # the ones it takes where it takes no others
    implied: ClassVar[dict] = {}  # settings it implies unless given (s3: mine_from)
    options: ClassVar[dict[str, str]] = {}  # compare switches `key=X` -> settings field

    def __init__(self, settings: "StrategyConfig"):
        self.settings = settings

    # -- what a round asks -----------------------------------------------------------------
    def plan(self, view: RoundView, task: "Task", n_per_error: int, rounds: int) -> RoundPlan:
        """The round's requests (`requests`), with the real texts the round may read: those
        of the seed and validation rows, whichever strategy plans."""
        plan = self.requests(view, task, n_per_error, rounds)
        seed_rows, validation = _seed_rows(view), view.validation
        texts = seed_rows.column("input").to_pylist() + (
            validation.column("input").to_pylist() if validation is not None else [])
        return replace(plan, real_texts=tuple(texts))

    def requests(self, view: RoundView, task: "Task", n_per_error: int,
                 rounds: int) -> RoundPlan:
        """The round's requests. With no training rows yet (round 0 of a unit that writes
        its own seed) they write the synthetic seed."""
        prompts = self.prompts(task)
        train_set = view.train_set if view.train_set is not None else EXAMPLE.empty_table()
        validation = view.validation if view.validation is not None else EXAMPLE.empty_table()
        seed_rows = _seed_rows(view)
        # the real texts a candidate must look like: the training set's, or (mining the
        # validation rows, as s3 does with a synthetic training set) the validation set's
        mines_validation = self.settings.mine_from == "validation"
        real = validation if mines_validation else seed_rows
        demo_pool = seed_rows if seed_rows.num_rows else real
        style = (real if mines_validation else train_set).column("input").to_pylist()
        # the real rows whose labels the teacher's rows are judged by (teacher.label_fit): the
        # seed, and the validation rows where the round already reads their labels
        labelled = pa.concat_tables([t.select(["input", "label"]) for t in (
            [seed_rows, validation] if mines_validation else [seed_rows])])
        per_error = self.settings.rows_per_error or view.budget_quota or n_per_error
        per_label = self.settings.rationales_per_label
        firsts = self.first_texts(task)
        if train_set.num_rows == 0 and view.round == 0:
            quota, repeats = seed_quota(self.settings.seed_rows_per_label, per_label,
                                        self.settings.seed_rows_per_request)
            if self.explains:
                return RoundPlan(None, quota, prompts, demo_pool, style, per_label, labelled,
                                 repeats, firsts)
            budget = view.budget if view.budget is not None \
                else per_label * len(view.labels) * repeats
            targets = self.seed_targets(_with_budget(view, budget))
            return RoundPlan(targets, quota, prompts, demo_pool, style, label_rows=labelled,
                             first_texts=firsts)
        if self.explains and not self.settings.extrapolate:
            # the S3 paper's control: as many rows as the errors would have been asked for,
            # written as the seed was (new rationales, examples on each), no error shown
            wanted = (view.errors.num_rows if view.budget is None else view.budget) * per_error
            if wanted == 0 or not view.labels:
                return RoundPlan(view.errors.slice(0, 0), per_error, prompts, demo_pool, style,
                                 label_rows=labelled, first_texts=firsts)
            quota, repeats = seed_quota(math.ceil(wanted / len(view.labels)), per_label,
                                        self.settings.seed_rows_per_request)
            return RoundPlan(None, quota, prompts, demo_pool, style, per_label, labelled,
                             repeats, firsts)
        quota = per_error * (rounds - 1 if self.settings.one_shot else 1)
        return RoundPlan(self.targets(view), quota, prompts, demo_pool, style,
                         label_rows=labelled, first_texts=firsts)

    def first_texts(self, task: "Task") -> tuple[str, ...]:
        """The real first texts a round's second texts are written on (strategy.
        real_first_text: s3 and zerogen on a pair task unless turned off), else none: the S3
        paper's NLI synthesis, as ZeroGen's, keeps a real premise and has the teacher write
        only the hypothesis. Raises ValueError naming the fix where the prompt file or the
        train rows fall short."""
        if not self.second_text_templates or self.settings.real_first_text is False \
                or not task.is_pair:
            return ()
        prompts = self.prompts(task)
        missing = [t for t in self.second_text_templates if t not in prompts.templates]
        if missing:
            raise ValueError(f"task {task.name}: strategy.real_first_text renders the "
                             f"template(s) {', '.join(missing)}, which {prompts.path} lacks; "
                             f"add them (see prompts/{self.builtin_pair_prompts}) or set "
                             f"strategy.real_first_text: false")
        pool = task.first_text_pool()
        if not pool:
            raise ValueError(f"task {task.name}: strategy.real_first_text needs unused train "
                             f"rows to take first texts from, and every train row is seed, "
                             f"validation or test; lower n_validation or set "
                             f"strategy.real_first_text: false")
        return pool

    def targets(self, view: RoundView) -> pa.Table:
        """The rows the teacher is asked to write new examples like (EXAMPLE schema)."""
        return self.aimed(view)

    def aimed(self, view: RoundView) -> pa.Table:
        """The errors, or with `keep_label_mix` as many rows kept to the mined rows' label
        mix (see keep_label_mix). A variant in a compare (`llm2llm+mine_all`, ...) has a
        budget, its plain unit's targets this round: it asks about at most that many (its
        own errors drawn at random), so a variant differs from its plain unit in what it
        asks about, not in how much."""
        if self.settings.keep_label_mix and view.labels:
            return keep_label_mix(view.errors, view.mining, view.rng, view.budget)
        if self.settings.stratify_errors and view.labels:
            return stratified_errors(view.errors, view.mining, view.rng, view.budget)
        if view.budget is not None and view.errors.num_rows > view.budget:
            return take_random(view.errors, view.budget, view.rng)
        return view.errors

    def seed_targets(self, view: RoundView) -> pa.Table:
        """Round 0's targets for a unit with no labelled seed (S3's setting): what its
        synthetic seed is written from. Only strategies that synthesize a seed can start so."""
        raise NotImplementedError(f"strategy {self.name} needs labelled seed rows")

    def prompts(self, task: "Task") -> "PromptSet":
        """The task's prompt file this strategy's requests are rendered from."""
        return task.prompts

    # -- how the job treats it --------------------------------------------------------------
    @classmethod
    def rounds(cls, configured: int) -> int:
        """Rounds the unit runs (seed_only: one, which stands for all)."""
        return configured

    def augments(self, r: int, configured: int) -> bool:
        """Whether round r asks the teacher: the last round does not (nothing would train on
        it); one_shot spends the whole budget in round 0."""
        if not self.uses_teacher or r == configured - 1:
            return False
        return r == 0 or not self.settings.one_shot

    @classmethod
    def task_problems(cls, task: "Task", index: int) -> list[str]:
        """What a task lacks for this strategy (preflight; `index` in config.tasks)."""
        return []


def seed_quota(rows_per_label: int, targets_per_label: int,
               per_request: int | None = None) -> tuple[int, int]:
    """(rows asked for per request, requests per target) so that each label's targets
    together ask for about rows_per_label (never fewer), no request asking for more than
    per_request rows (None: one request per target)."""
    per_target = math.ceil(rows_per_label / targets_per_label)
    repeats = 1 if per_request is None else math.ceil(per_target / per_request)
    return math.ceil(per_target / repeats), repeats


def _seed_rows(view: RoundView) -> pa.Table:
    """The round's real labelled seed rows (none for a unit that writes its own seed)."""
    train_set = view.train_set if view.train_set is not None else EXAMPLE.empty_table()
    return train_set.filter(pc.equal(train_set["origin"], SEED))


def _with_budget(view: RoundView, budget: int) -> RoundView:
    return RoundView(view.errors, view.mining, budget, view.rng, view.task, view.labels,
                     view.round, view.train_set, view.validation, view.budget_quota)


def take_random(table: pa.Table, n: int, rng: random.Random) -> pa.Table:
    """n rows drawn without replacement (all of them if there are fewer), in table order."""
    if n >= table.num_rows:
        return table
    return table.take(pa.array(sorted(rng.sample(range(table.num_rows), n)), pa.int64()))


def _label_shares(labels: list[str], n: int) -> dict[str, int]:
    """n spread over the labels as they occur in `labels` (largest remainders)."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    exact = {label: n * c / len(labels) for label, c in counts.items()}
    share = {label: int(x) for label, x in exact.items()}
    for label in sorted(exact, key=lambda k: (share[k] - exact[k], k))[:n - sum(share.values())]:
        share[label] += 1
    return share


def stratified_errors(errors: pa.Table, mining: pa.Table, rng: random.Random,
                      n: int | None = None) -> pa.Table:
    """At most n of the errors (default: all of them), no label more than its share of n by
    the mined rows' label mix, and only errors (no right rows, unlike keep_label_mix, which is
    close to the S3 paper's GoldGen): a weak student's errors lean to one label, and aimed at
    all of them a round writes that label alone."""
    n = errors.num_rows if n is None else min(n, errors.num_rows)
    if n == 0 or mining.num_rows == 0:
        return errors.slice(0, 0) if n == 0 else errors
    mined = mining.column("label").to_pylist()
    # a label's cap rounds up, so a label never gets none of a few targets by rounding alone
    cap = {label: math.ceil(n * mined.count(label) / len(mined)) for label in set(mined)}
    labels = errors.column("label").to_pylist()
    picked = []
    for label in sorted(set(labels)):
        mine = [i for i, row_label in enumerate(labels) if row_label == label]
        picked += rng.sample(mine, min(cap.get(label, 0), len(mine)))
    if len(picked) > n:  # the rounded-up caps may pass n by a row per label
        picked = rng.sample(picked, n)
    return errors.take(pa.array(sorted(picked), pa.int64()))


def keep_label_mix(errors: pa.Table, mining: pa.Table, rng: random.Random,
                   n: int | None = None) -> pa.Table:
    """n targets (default: as many as there are errors), spread over the labels as the mined
    rows are (largest remainders), each label's share filled with its errors first, then with
    rows of that label the student got right. A weak student's errors lean to one label (it
    answers the other for nearly everything); aimed at them alone, a round writes rows of
    that label only and the next student leans the other way (measured on RTE, README)."""
    n = errors.num_rows if n is None else min(n, mining.num_rows)
    if n == 0 or mining.num_rows == 0:
        return errors
    labels = mining.column("label").to_pylist()
    share = _label_shares(labels, n)
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
