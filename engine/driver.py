"""The round loop: DATA -> TRAIN -> PREDICT -> MINE -> AUGMENT, for every unit of a job.

A unit is a task under a strategy with a training seed (engine/strategies/): one per task in a
plain run, strategies x seeds per task in a compare. `RoundLoop.run_round` reads as the
round's stages in order; each stage is a module with one entry point (engine/stages/), run
through the StageStore (engine/stage_store.py: load a finished stage, share round 0, write
outputs then the manifest). How units advance side by side is engine/scheduling.py. The loop
is plain Python over injected backends (fakes in unit tests, Ray Train/vLLM for real);
`DriverActor` runs it inside Ray, and calls `ray.get` only at stage boundaries.
"""

from __future__ import annotations

import random
from contextlib import nullcontext
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from engine import fs as engine_fs
from engine.backends import StudentTrainer, TextGenerator
from engine.config import RunConfig, StopConfig
from engine.errors import EngineError, StorageError, UnitsFailed, root_cause
from engine.fingerprint import inputs_fingerprint
from engine.metrics import round_metrics
from engine.records import EXAMPLE, PREDICTION, StageResult
from engine.sampling import sampling_params
from engine.scheduling import advance
from engine.stage_store import Aborted, StageStore
from engine.stages.augment import TeacherCalls, accepted_examples, augment
from engine.stages.mine import MINED_ORIGINS, mine_errors, mining_rows, with_outputs
from engine.stages.predict import predict
from engine.stages.train import at_added_share, loss_table, train_student
from engine.stopping import budget_spent, request_cap, stop_reason
from engine.storage import RunStorage
from engine.strategies import RoundView, Unit, needs_validation, plan_units
from engine.tasks import Task


class RoundLoop:
    def __init__(self, cfg: RunConfig, tasks: list[Task], student_model: str, teacher_model: str,
                 student_gen: TextGenerator, teacher_gen: TextGenerator, trainer: StudentTrainer,
                 log: Callable[[str], None] = print):
        self.cfg, self.tasks, self.log = cfg, tasks, log
        self.units = plan_units(cfg, tasks)
        self.student_model, self.teacher_model = student_model, teacher_model
        self.student_gen, self.teacher_gen, self.trainer = student_gen, teacher_gen, trainer
        self.store = RunStorage(cfg.run_dir)
        self.stages = StageStore(self.store, self.units, log)
        # (task, training seed, round) -> what the budget-setting unit spent that round (the
        # rows it asked about, its requests, the rows it accepted): the budget the baselines
        # and switch variants match (compare.match)
        self.budgets: dict[tuple[str, int, int], dict] = {}
        # unit key -> its rounds' metrics so far, and why it stopped (engine/stopping.py)
        self.history: dict[str, list[dict]] = {u.key: [] for u in self.units}
        self.stopped: dict[str, str] = {}
        self.failed: dict[str, str] = {}  # unit key -> what went wrong, for UnitsFailed

    def run(self, splits: dict | None = None) -> Iterator[list[dict]]:
        """Yield the metrics of a group of units each time it finishes a round (all units
        round by round with `parallel` 1; engine/scheduling.py).

        splits: task name -> its Splits (seed, test, validation and guard rows), as read at
        preflight; read here if absent.
        """
        splits = splits or {t.name: t.splits(needs_validation(self.cfg, t.cfg))
                           for t in self.tasks}
        yield from advance(self.units, lambda units: self._rounds(units, splits),
                           self.cfg.parallel, self.stages.abort, self.log)
        if self.failed:
            raise UnitsFailed(self.failed)

    def _rounds(self, units: list[Unit], splits: dict) -> Iterator[list[dict]]:
        """Every round of `units`, one round of each before the next round of any."""
        # a unit that writes its own seed (s3) starts with no training rows; the fair floor
        # (seed_only+with_validation) with the validation rows beside the seed
        train_sets = {u.key: pa.Table.from_pylist(
            (splits[u.task.name].seed if u.strategy.uses_seed else [])
            + (splits[u.task.name].validation if u.settings.train_on_validation else []),
            schema=EXAMPLE) for u in units}
        for r in range(self.cfg.rounds):
            metrics = []
            for unit in units:
                if r >= unit.strategy.rounds(self.cfg.rounds) or unit.key in self.stopped:
                    continue
                split = splits[unit.task.name]
                test, validation, guard = (pa.Table.from_pylist(rows, schema=EXAMPLE)
                                           for rows in (split.test, split.validation, split.guard))
                try:
                    m, added = self.run_round(unit, r, train_sets[unit.key], test, validation,
                                              guard)
                except (StorageError, Aborted):
                    raise  # a full disk stops every unit alike
                except Exception as exc:  # noqa: BLE001 - one unit failing stops only itself
                    self._fail(unit, r, exc)
                    continue
                train_sets[unit.key] = pa.concat_tables([train_sets[unit.key], added])
                metrics.append(m)
            if not metrics:  # every unit has stopped
                break
            yield metrics

    def run_round(self, unit: Unit, r: int, train_set: pa.Table, test: pa.Table,
                  validation: pa.Table | None = None, guard: pa.Table | None = None):
        """One round of one unit, stage by stage; returns (metrics, accepted examples for the
        next round). The guard rows are only predicted (they choose the round a unit ships):
        no strategy plans from them and the teacher never reads them. With no training rows
        (round 0 of a unit that writes its own seed), train, predict and mine are recorded as
        skipped and the augment stage writes the seed."""
        timings: dict[str, float] = {}
        stage = lambda name, compute, inputs=None: self.stages.run(  # noqa: E731
            unit, r, name, timings, compute, inputs)
        failed = f"{self.store.round_dir(unit.key, r)}/FAILED.json"
        if self.store.exists(failed):  # an earlier attempt's failure: this one starts afresh
            engine_fs.delete(self.store.fs, failed)
        validation = validation if validation is not None else EXAMPLE.empty_table()
        guard = guard if guard is not None else EXAMPLE.empty_table()
        # what the student trains on: every row once, or the added rows at a set share
        # (strategy.added_share); strategies plan from, and errors are mined on, the rows
        trained_on = stage("data", lambda _: at_added_share(
            train_set, unit.settings.added_share,
            random.Random(f"{unit.task.name}:{unit.train_seed}:{r}:mix"))).table
        if trained_on.num_rows == 0:
            train_stats, predictions, errors, mining = self._skip(unit, r, stage)
        else:
            task, model = unit.task, self.stages.model(unit, r)
            selects_on = validation if self.cfg.train.select_epoch == "validation" else None
            # what each stage reads, as one hash: a unit of the same task and seed that read
            # the same has its stage copied (s3's control trains s3's round-1 student)
            trained = self._train_inputs(unit, r, trained_on, selects_on)
            train_stats = stage("train", lambda _: train_student(
                task, trained_on, self._base(unit, r), model, self.trainer, unit.key,
                unit.train_seed, selects_on), trained).info
            mining = mining_rows(unit.settings.mine_from, train_set, validation)
            # without guard rows, the fingerprint of a run from before they existed
            predicted = trained and inputs_fingerprint(
                "predict", trained, mining, test, *([guard] if guard.num_rows else []))
            predictions = stage("predict", lambda _: predict(
                task, mining, test, model,
                lambda requests, m: self.student_gen(requests, m, "predict"),
                sampling_params(self.cfg.student, task.cfg.student_sampling), guard),
                predicted).table
            origins = MINED_ORIGINS[unit.settings.mine_from]
            errors = stage("mine", lambda _: mine_errors(mining, predictions, origins),
                           predicted and inputs_fingerprint("mine", predicted, origins)).table
        rules = unit.task.cfg.stop or self.cfg.stop
        spent = self._budget_spent(unit, r, rules)
        candidates, asked = None, {}
        if unit.strategy.augments(r, self.cfg.rounds) and not spent:
            result = stage("augment", lambda _: self._augment(unit, r, self._view(
                unit, r, errors, mining, predictions, train_set, validation), rules, test,
                guard))
            candidates, asked = result.table, result.info
            budget_key = (unit.task.name, unit.train_seed, r)
            if unit.sets_budget and budget_key not in self.budgets:  # llm2llm's, else s3's
                self.budgets[budget_key] = {
                    "unit": unit.key, "quota": asked.get("quota"),
                    "targets": asked.get("targets", 0),
                    "requests": asked.get("requests", 0),
                    "rows": pc.sum(candidates["accepted"]).as_py() or 0}
        metrics = self._metrics(unit, r, trained_on, predictions, errors, candidates,
                                train_stats, timings, asked)
        self._stop_if_done(unit, r, metrics, rules, spent)
        self.history[unit.key].append(metrics)
        self.store.write_json(f"{self.store.round_dir(unit.key, r)}/metrics.json", metrics)
        added = accepted_examples(candidates) if candidates is not None else EXAMPLE.empty_table()
        return metrics, added

    def _train_inputs(self, unit: Unit, r: int, trained_on: pa.Table,
                      validation: pa.Table | None) -> str | None:
        """The train stage's inputs as one fingerprint: the rows as the trainer reads them,
        the epoch-choosing rows, the training seed and settings, and what it starts from (the
        base model, or the fingerprint of the round that trained the previous student; None
        when that round has none: an engine before fingerprints trained it)."""
        if unit.settings.from_base or r == 0:
            start = ["base model", self.student_model]
        else:
            start = self.stages.fingerprint(unit, r - 1, "train")
            if start is None:
                return None
        read = ["input", "target", "label"]  # all that training_examples passes on
        return inputs_fingerprint(
            "train", unit.task.name, unit.train_seed, start,
            self.cfg.train.model_dump(mode="json"), self.cfg.student.model_dump(mode="json"),
            trained_on.select(read), None if validation is None else validation.select(read))

    def _base(self, unit: Unit, r: int) -> str:
        """What round r trains from: the base model every round (LLM2LLM), or the previous
        round's student (strategy.from_base: false)."""
        from_base = unit.settings.from_base or r == 0
        return self.student_model if from_base else self.stages.model(unit, r - 1)

    def _skip(self, unit: Unit, r: int, stage) -> tuple[dict, pa.Table, pa.Table, pa.Table]:
        """Train, predict and mine of a round with nothing to train on, recorded as done and
        empty (so status, resume and inspect see them), with the reason in the manifest."""
        reason = ("no training rows yet: this round's augment stage writes the synthetic seed"
                  if r == 0 else "no training rows: the teacher's rows were all rejected "
                                 "(llm2llm inspect shows why)")
        if r > 0:
            self.log(f"[{unit.key} r{r}] {reason}")
        empty = lambda table: lambda _: StageResult(table, {"skipped": reason})  # noqa: E731
        info = stage("train", empty(loss_table([]))).info
        predictions = stage("predict", empty(PREDICTION.empty_table())).table
        errors = stage("mine", empty(EXAMPLE.empty_table())).table
        return info, predictions, errors, EXAMPLE.empty_table()

    def _view(self, unit: Unit, r: int, errors: pa.Table, mining: pa.Table,
              predictions: pa.Table, train_set: pa.Table, validation: pa.Table) -> RoundView:
        """What the unit's strategy plans the round from."""
        task = unit.task
        # the rows it may ask about: as many as the matched unit did, or, matching requests,
        # one per request (fresh rows before top-up asks of the same ones)
        matched = self._matched(unit, r)
        budget = self._matched(unit, r, "requests" if matched and matched[0] == "requests"
                               else "targets")
        return RoundView(errors=errors, mining=with_outputs(mining, predictions)[0],
                         budget=budget[1] if budget else None,
                         rng=random.Random(f"{task.name}:{unit.train_seed}:{r}"),
                         task=task.name, labels=tuple(task.labels), round=r,
                         train_set=train_set, validation=validation,
                         budget_quota=self.budgets[(task.name, unit.train_seed, r)]["quota"]
                         if matched else None)

    def _matched(self, unit: Unit, r: int, by: str | None = None) -> tuple[str, int] | None:
        """(what, how many) of its task-seed's budget-setting unit's round r the unit matches:
        `by` (default compare.match) times its budget_scale; one_shot, which spends every
        round's budget in round 0, its rounds - 1 times. None: the unit set the budget, or
        nothing did (a plain s3 unit beside llm2llm matches llm2llm's)."""
        spent = self.budgets.get((unit.task.name, unit.train_seed, r))
        if spent is None or spent["unit"] == unit.key:
            return None
        by = by or (self.cfg.compare.match if self.cfg.compare else "targets")
        scale = unit.settings.budget_scale
        if by != "targets" and unit.settings.one_shot:
            scale *= self.cfg.rounds - 1
        return by, round(spent[by] * scale)

    def _augment(self, unit: Unit, r: int, view: RoundView, rules: StopConfig,
                 test: pa.Table, guard: pa.Table) -> StageResult:
        """The strategy plans, the augment stage executes; the teacher's engines stay up
        from its first call to its last (asks, answer checks, top-ups)."""
        teacher, task = self.cfg.teacher, unit.task
        plan = unit.strategy.plan(view, task, teacher.n_per_error, self.cfg.rounds)
        ask = lambda stage: lambda requests: self.teacher_gen(  # noqa: E731
            requests, self.teacher_model, stage, group=unit.key)
        # a teacher row that is a held-out row would score what the student saw
        protected = [text for rows in (test, view.validation, guard)
                     for text in rows.column("input").to_pylist()]
        cap = lambda asked: request_cap(rules, self.history[unit.key],  # noqa: E731
                                        teacher.prices, asked)
        # without keep_warm, the engines would stop and start again between calls
        holding = getattr(self.teacher_gen, "holding", None)  # an API or a fake has none
        with holding(self.teacher_model) if holding else nullcontext():
            return augment(plan, task, r, teacher,
                           sampling_params(teacher, task.cfg.teacher_sampling),
                           TeacherCalls(ask("augment"), ask("check"), unit.train_seed),
                           view.train_set,
                           protected, cap, label_fit=teacher.label_fit.enabled
                           if unit.settings.label_fit is None else unit.settings.label_fit,
                           match=self._matched(unit, r))

    def _budget_spent(self, unit: Unit, r: int, rules: StopConfig) -> str:
        """Why the unit's teacher budget is spent ("" if it is not, or if this round asked
        before the budget was lowered: what was done is kept)."""
        spent = budget_spent(rules, self.history[unit.key], self.cfg.teacher.prices)
        return "" if spent and self.stages.augmented(unit, r) else spent

    def _metrics(self, unit: Unit, r: int, train_set: pa.Table, predictions: pa.Table,
                 errors: pa.Table, candidates: pa.Table | None, train_stats: dict,
                 timings: dict, asked: dict) -> dict:
        usage = {"predict": self.stages.usage(unit, r, "predict", self.cfg.student.prices)}
        if candidates is not None:
            usage["augment"] = self.stages.usage(unit, r, "augment", self.cfg.teacher.prices)
        metrics = round_metrics(unit.task.name, r, train_set, predictions, errors, candidates,
                                train_stats, timings, usage, asked,
                                self.stages.previous(unit, r))
        metrics.update(unit.task.round_scores(predictions))  # QA: F1 beside exact match
        metrics.update(strategy=unit.variant, train_seed=unit.train_seed, unit=unit.key,
                       mined_from=unit.settings.mine_from)
        return metrics

    def _stop_if_done(self, unit: Unit, r: int, metrics: dict, rules: StopConfig,
                      spent: str) -> None:
        """Whether the unit stops after round r (engine/stopping.py): the reason goes into
        its metrics and `stopped`."""
        if r >= unit.strategy.rounds(self.cfg.rounds) - 1:
            return
        asks = unit.strategy.augments(r, self.cfg.rounds)
        reason = (spent and asks and f"teacher budget spent: {spent}") \
            or self._matched_unit_stopped(unit) or stop_reason(
                rules, self.history[unit.key] + [metrics], unit.settings.from_base)
        if reason:
            metrics["stop_reason"] = reason
            self.stopped[unit.key] = reason
            self.log(f"[{unit.key} r{r}] stops: {reason}")

    def _fail(self, unit: Unit, r: int, exc: Exception) -> None:
        """Record a unit's failure (FAILED.json in its round folder, shown by status) and go
        on with the others; the job reports every failure at its end (UnitsFailed)."""
        reason = root_cause(exc) if not isinstance(exc, EngineError) else str(exc)
        reason = " ".join(reason.split())[:500]
        self.failed[unit.key] = f"round {r}: {reason}"
        self.stopped[unit.key] = f"failed in round {r}"
        self.store.write_json(f"{self.store.round_dir(unit.key, r)}/FAILED.json",
                              {"unit": unit.key, "round": r, "error": reason,
                               "type": type(exc).__name__})
        self.log(f"[{unit.key} r{r}] failed: {reason}; the other units go on")

    def _matched_unit_stopped(self, unit: Unit) -> str:
        """A baseline matched to its task-seed's llm2llm (or s3) unit stops with it: with no
        budget to match, it would no longer be the same experiment."""
        if unit.sets_budget:
            return ""
        for other in self.units:
            if other.sets_budget and other.key in self.stopped and \
                    (other.task.name, other.train_seed) == (unit.task.name, unit.train_seed):
                return f"its matched unit {other.key} stopped"
        return ""
