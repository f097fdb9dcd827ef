"""The round loop: TRAIN -> PREDICT -> GRADE -> MINE -> AUGMENT, for every unit of a job.

A unit is a task under a strategy with a training seed (engine/strategies/): one per task in a
plain run, strategies x seeds per task in a compare. `RoundLoop` is plain Python over injected
backends (fakes in unit tests, Ray Train/vLLM for real). `DriverActor` runs it inside Ray, so
the job survives a client disconnect and calls `ray.get` only at stage boundaries. A stage
whose manifest exists is loaded, not re-run.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from engine import fs as engine_fs
from engine.backends import StudentTrainer, TextGenerator
from engine.config import RunConfig
from engine.errors import EngineError, StorageError, UnitsFailed, root_cause, storage_problem
from engine.metrics import generation_usage, round_metrics
from engine.records import EXAMPLE, PREDICTION
from engine.sampling import sampling_params
from engine.stages.augment import (AnswerCheck, CandidateFilter, accepted_examples, ask_teacher,
                                   teacher_requests)
from engine.stages.mine import mine_errors, with_outputs
from engine.stages.predict import grade, student_requests
from engine.stages.synthesize import ask_rationales, rationale_requests, seed_quota
from engine.stopping import budget_spent, request_cap, stop_reason
from engine.storage import RunStorage
from engine.strategies import RoundView, Unit, plan_units
from engine.tasks import Task

GENERATIONS = "generations"  # the raw GENERATED rows a stage produced, next to its output
RATIONALES = "rationales"  # s3's round-0 rationales (EXAMPLE rows), next to the augment output


@dataclass
class StageResult:
    """What every stage gives the round: its table (stored as the stage's Parquet) and facts
    about the run kept in its manifest (the train stage's stats, the augment stage's asks)."""

    table: pa.Table
    info: dict = field(default_factory=dict)


class _Aborted(Exception):
    """Raised at a stage boundary of a group side by side after another group's error
    stopped the job."""


# Round-0 stages every strategy shares for a task and training seed (see _round0_twin).
ROUND0_SHARED = ("train", "predict", "mine")


class RoundLoop:
    def __init__(self, cfg: RunConfig, tasks: list[Task], student_model: str, teacher_model: str,
                 student_gen: TextGenerator, teacher_gen: TextGenerator, trainer: StudentTrainer,
                 log: Callable[[str], None] = print):
        self.cfg, self.tasks, self.log = cfg, tasks, log
        self.units = plan_units(cfg, tasks)
        self.student_model, self.teacher_model = student_model, teacher_model
        self.student_gen, self.teacher_gen, self.trainer = student_gen, teacher_gen, trainer
        self.store = RunStorage(cfg.run_dir)
        # (task, training seed, round) -> targets the llm2llm unit asked about: the budget the
        # random and mixed baselines match
        self.budgets: dict[tuple[str, int, int], int] = {}
        # unit key -> its rounds' metrics so far, and why it stopped (engine/stopping.py)
        self.history: dict[str, list[dict]] = {u.key: [] for u in self.units}
        self.stopped: dict[str, str] = {}
        self.failed: dict[str, str] = {}  # unit key -> what went wrong, for UnitsFailed
        self._abort = threading.Event()  # set: groups side by side start no new stage

    def run(self, splits: dict | None = None) -> Iterator[list[dict]]:
        """Yield the metrics of a group of units each time it finishes a round.

        A group is a task (in a compare, a task and training seed): its units depend on each
        other (round-0 stages are shared, baselines match the llm2llm unit's budget), groups
        do not. With `parallel` 1 every round runs group after group and one list per round
        comes back; otherwise the groups run side by side, each in its own thread at its own
        pace, and each group's round comes back as it finishes.

        splits: task name -> (seed rows, test rows, validation rows), as read at preflight;
        read here if absent.
        """
        splits = splits or {t.name: t.splits(self.needs_validation(t)) for t in self.tasks}
        groups: dict[tuple[str, int], list[Unit]] = {}
        for unit in self.units:
            groups.setdefault((unit.task.name, unit.train_seed), []).append(unit)
        width = min(self.cfg.parallel or len(groups), len(groups))
        if width <= 1:
            yield from self._rounds(self.units, splits)
        else:
            yield from self._side_by_side(list(groups.values()), splits, width)
        if self.failed:
            raise UnitsFailed(self.failed)

    def _rounds(self, units: list[Unit], splits: dict) -> Iterator[list[dict]]:
        """Every round of `units`, one round of each before the next round of any."""
        # a unit that writes its own seed (s3) starts with no training rows
        train_sets = {u.key: pa.Table.from_pylist(
            splits[u.task.name][0] if u.strategy.uses_seed else [], schema=EXAMPLE)
            for u in units}
        for r in range(self.cfg.rounds):
            metrics = []
            for unit in units:
                if r >= unit.strategy.rounds(self.cfg.rounds) or unit.key in self.stopped:
                    continue
                test, validation = (pa.Table.from_pylist(rows, schema=EXAMPLE)
                                    for rows in splits[unit.task.name][1:3])
                try:
                    m, added = self.run_round(unit, r, train_sets[unit.key], test, validation)
                except (StorageError, _Aborted):
                    raise  # a full disk stops every unit alike
                except Exception as exc:  # noqa: BLE001 - one unit failing stops only itself
                    self._fail(unit, r, exc)
                    continue
                train_sets[unit.key] = pa.concat_tables([train_sets[unit.key], added])
                metrics.append(m)
            if not metrics:  # every unit has stopped
                break
            yield metrics

    def _side_by_side(self, groups: list[list[Unit]], splits: dict,
                      width: int) -> Iterator[list[dict]]:
        """Run the groups in threads, at most `width` at once; yield each group's rounds as
        they finish. The stages' own resources (train workers, replicas) wait for the cluster
        in Ray, so on a small cluster the groups interleave rather than overload it. An error
        that stops the job (a full disk) stops the other groups at their next stage."""
        finished: queue.Queue = queue.Queue()
        slots = threading.Semaphore(width)

        def advance(units: list[Unit]) -> None:
            try:
                with slots:
                    for metrics in self._rounds(units, splits):
                        finished.put(("round", metrics))
            except _Aborted:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the job's thread
                finished.put(("error", exc))
            finally:
                finished.put(("done", None))

        self._abort.clear()
        threads = [threading.Thread(target=advance, args=(units,), daemon=True,
                                    name=f"units-{units[0].key}") for units in groups]
        for thread in threads:
            thread.start()
        running, error = len(threads), None
        try:
            while running:
                kind, value = finished.get()
                if kind == "round":
                    yield value
                elif kind == "error":
                    if error is None:
                        error = value
                        self._abort.set()
                        self.log("stopping: the other tasks end at their next stage")
                else:
                    running -= 1
        finally:
            self._abort.set()  # also when the caller stops early: no new stage starts
            for thread in threads:
                thread.join()
        if error is not None:
            raise error

    def needs_validation(self, task: Task) -> bool:
        """Whether any unit of the task mines the real validation rows (s3)."""
        return any(u.settings.mine_from == "validation" for u in self.units if u.task is task)

    def run_round(self, unit: Unit, r: int, train_set: pa.Table, test: pa.Table,
                  validation: pa.Table | None = None):
        """One round of one unit; returns (metrics, accepted examples for the next round).

        With no training rows (round 0 of a unit that writes its own seed), train, predict
        and mine are recorded as skipped and the augment stage writes the seed."""
        timings: dict[str, float] = {}
        stage = lambda name, compute: self._stage(unit, r, name, timings, compute)  # noqa: E731
        failed = f"{self.store.round_dir(unit.key, r)}/FAILED.json"
        if self.store.exists(failed):  # an earlier attempt's failure: this one starts afresh
            engine_fs.delete(self.store.fs, failed)
        validation = validation if validation is not None else EXAMPLE.empty_table()
        train_set = stage("data", lambda d: self._write(d, train_set)).table
        if train_set.num_rows == 0:
            train_stats, predictions, errors, mining = self._skip(unit, r, stage)
        else:
            model = self._model(unit, r)
            train_stats = stage("train",
                                lambda d: self._train(unit, r, train_set, model, d)).info
            mining = self._mining_rows(unit, train_set, validation)
            predictions = stage(
                "predict", lambda d: self._predict(unit.task, mining, test, model, d)).table
            errors = stage("mine", lambda d: self._write(d, mine_errors(
                mining, predictions, self._mined_origins(unit)))).table
        candidates, asked = None, {}
        rules = unit.task.cfg.stop or self.cfg.stop
        spent = budget_spent(rules, self.history[unit.key], self.cfg.teacher.prices)
        if spent and self.store.is_complete(self.store.stage_dir(unit.key, r, "augment")):
            spent = ""  # asked before the budget was lowered: what was done is kept
        if self._augments(unit, r) and not spent:
            result = stage("augment", lambda d: self._teacher_held(lambda: self._augment(
                unit, r, errors, mining, predictions, train_set, test, validation, d)))
            candidates, asked = result.table, result.info
            budget_key = (unit.task.name, unit.train_seed, r)
            if unit.sets_budget and budget_key not in self.budgets:  # llm2llm's, else s3's
                self.budgets[budget_key] = asked.get("targets", 0)
        added = accepted_examples(candidates) if candidates is not None else EXAMPLE.empty_table()
        usage = {"predict": self._usage(unit, r, "predict", self.cfg.student.prices)}
        if candidates is not None:
            usage["augment"] = self._usage(unit, r, "augment", self.cfg.teacher.prices)
        metrics = round_metrics(unit.task.name, r, train_set, predictions, errors, candidates,
                                train_stats, timings, usage, asked, self._previous(unit, r))
        metrics.update(unit.task.round_scores(predictions))  # QA: F1 beside exact match
        metrics.update(strategy=unit.variant, train_seed=unit.train_seed, unit=unit.key,
                       mined_from=unit.settings.mine_from)
        if r < unit.strategy.rounds(self.cfg.rounds) - 1:
            reason = (spent and self._augments(unit, r) and f"teacher budget spent: {spent}") \
                or self._matched_unit_stopped(unit) or stop_reason(
                    rules, self.history[unit.key] + [metrics], unit.settings.from_base)
            if reason:
                metrics["stop_reason"] = reason
                self.stopped[unit.key] = reason
                self.log(f"[{unit.key} r{r}] stops: {reason}")
        self.history[unit.key].append(metrics)
        self.store.write_json(f"{self.store.round_dir(unit.key, r)}/metrics.json", metrics)
        return metrics, added

    def _skip(self, unit: Unit, r: int, stage) -> tuple[dict, pa.Table, pa.Table, pa.Table]:
        """Train, predict and mine of a round with nothing to train on, recorded as done and
        empty (so status, resume and inspect see them), with the reason in the manifest."""
        reason = ("no training rows yet: this round's augment stage writes the synthetic seed"
                  if r == 0 else "no training rows: the teacher's rows were all rejected "
                                 "(llm2llm inspect shows why)")
        if r > 0:
            self.log(f"[{unit.key} r{r}] {reason}")
        empty = lambda table: lambda d: StageResult(self._write(d, table),  # noqa: E731
                                                    {"skipped": reason})
        info = stage("train", empty(pa.table({"step": pa.array([], pa.int32()),
                                              "loss": pa.array([], pa.float64())}))).info
        predictions = stage("predict", empty(PREDICTION.empty_table())).table
        errors = stage("mine", empty(EXAMPLE.empty_table())).table
        return info, predictions, errors, EXAMPLE.empty_table()

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

    def _augments(self, unit: Unit, r: int) -> bool:
        """The last round does not augment (nothing would train on it); one_shot spends the
        whole budget in round 0; seed_only never asks."""
        if not unit.strategy.uses_teacher or r == self.cfg.rounds - 1:
            return False
        return r == 0 or not unit.settings.one_shot

    # -- stage plumbing ---------------------------------------------------------------------
    def _stage(self, unit: Unit, r: int, name: str, timings: dict,
               compute: Callable[[str], pa.Table | StageResult]) -> StageResult:
        """Load a finished stage, or run it: outputs first, manifest last. `compute` returns
        the stage's table, or a StageResult whose `info` goes into the manifest."""
        if self._abort.is_set():
            raise _Aborted()
        stage_dir = self.store.stage_dir(unit.key, r, name)
        if self.store.is_complete(stage_dir):
            self.log(f"[{unit.key} r{r}] {name}: done before, loading")
            timings[name] = 0.0
            manifest = self.store.read_manifest(stage_dir)
            # "result": where engines before StageResult kept the train stage's stats
            info = manifest.get("info", manifest.get("result")) or {}
            return StageResult(self.store.read_table(stage_dir), info)
        twin = self._round0_twin(unit, r, name)
        if twin is not None:
            return self._copy_stage(unit, twin, name, timings)
        self.log(f"[{unit.key} r{r}] {name} ...")
        self.store.begin_stage(stage_dir)
        start = time.time()
        try:
            result = compute(stage_dir)
        except StorageError:
            raise
        except Exception as exc:
            # a full disk met by another process (a train worker saving the model) or library
            reason = storage_problem(exc)
            if reason:
                raise StorageError(self.store.location(stage_dir), reason) from exc
            raise
        if isinstance(result, pa.Table):
            result = StageResult(result)
        timings[name] = round(time.time() - start, 2)
        self.store.finish_stage(stage_dir, name, task=unit.task.name, unit=unit.key, round=r,
                                started_at=start, seconds=timings[name],
                                rows=result.table.num_rows,
                                info=result.info)
        return result

    def _round0_twin(self, unit: Unit, r: int, name: str) -> Unit | None:
        """An earlier unit whose finished round-0 `name` stage this unit's would repeat.

        Round 0 trains on the seed alone from the base model, so every strategy with the same
        task and training seed has the same round-0 student, predictions and errors (training
        is deterministic given the seed): a compare computes them once per task and seed."""
        if r != 0 or name not in ROUND0_SHARED or not unit.strategy.uses_seed:
            return None
        for other in self.units:
            if other is unit:
                return None
            same = (other.task.name, other.train_seed) == (unit.task.name, unit.train_seed)
            if same and other.strategy.uses_seed and \
                    self.store.is_complete(self.store.stage_dir(other.key, 0, name)):
                return other
        return None

    def _copy_stage(self, unit: Unit, twin: Unit, name: str, timings: dict) -> StageResult:
        """This unit's round-0 stage as a copy of its twin's, recorded as one. Generations
        copied count as cached: none were generated for this unit."""
        source, stage_dir = (self.store.stage_dir(u.key, 0, name) for u in (twin, unit))
        self.log(f"[{unit.key} r0] {name}: the same as {twin.key}'s, copied")
        self.store.begin_stage(stage_dir)
        self.store.copy_stage(source, stage_dir)
        if self.store.has_table(stage_dir, GENERATIONS):
            generated = self.store.read_table(stage_dir, GENERATIONS)
            generated = generated.set_column(
                generated.schema.get_field_index("cached"), "cached",
                pa.array([True] * generated.num_rows)).set_column(
                generated.schema.get_field_index("attempts"), "attempts",
                pa.array([0] * generated.num_rows, pa.int32()))
            self.store.write_table(stage_dir, generated, name=GENERATIONS)
        manifest = self.store.read_manifest(source)
        info = manifest.get("info", manifest.get("result")) or {}
        table = self.store.read_table(stage_dir)
        timings[name] = 0.0
        self.store.finish_stage(stage_dir, name, task=unit.task.name, unit=unit.key, round=0,
                                seconds=0.0, rows=table.num_rows, info=info,
                                copied_from=twin.key)
        return StageResult(table, info)

    def _usage(self, unit: Unit, r: int, stage: str, prices) -> dict | None:
        """Tokens, failures and cost of a stage's generations (stored with the stage); None
        for a stage finished by an engine version that did not keep them."""
        stage_dir = self.store.stage_dir(unit.key, r, stage)
        if not self.store.has_table(stage_dir, GENERATIONS):
            return None
        return generation_usage(self.store.read_table(stage_dir, GENERATIONS), prices)

    def _previous(self, unit: Unit, r: int) -> tuple[pa.Table, pa.Table] | None:
        """Round r-1's predictions and mined errors (for the fix rate), if it has them."""
        if r == 0:
            return None
        dirs = [self.store.stage_dir(unit.key, r - 1, s) for s in ("predict", "mine")]
        if not all(self.store.is_complete(d) for d in dirs):
            return None
        return self.store.read_table(dirs[0]), self.store.read_table(dirs[1])

    def _write(self, stage_dir: str, table: pa.Table) -> pa.Table:
        self.store.write_table(stage_dir, table)
        return table

    def _model(self, unit: Unit, r: int) -> str:
        """The round's student as other processes open it: a local path, or a URI."""
        return self.store.location(f"{self.store.stage_dir(unit.key, r, 'train')}/model")

    def _mining_rows(self, unit: Unit, train_set: pa.Table, validation: pa.Table) -> pa.Table:
        """The rows the student is graded on to find errors (and random targets): the seed,
        the whole training set (mine_from: all) or the real validation rows (s3)."""
        if unit.settings.mine_from == "validation":
            return validation
        if unit.settings.mine_from == "all":
            return train_set
        return train_set.filter(pc.equal(train_set["origin"], "seed"))

    @staticmethod
    def _mined_origins(unit: Unit) -> tuple[str, ...]:
        return {"all": ("seed", "synthetic"), "validation": ("validation",)}.get(
            unit.settings.mine_from, ("seed",))

    # -- stages -----------------------------------------------------------------------------
    def _train(self, unit: Unit, r: int, train_set: pa.Table, model: str,
               stage_dir: str) -> StageResult:
        """Train on seed + accepted rows, from the *base* model every round (LLM2LLM), or from
        the previous round's student (strategy.from_base: false). The stage's table is the
        loss curve; the training stats go into its manifest."""
        task = unit.task
        rows = train_set.to_pylist()
        # a causal student learns `target` after its chat prompt; an encoder, `label` from `input`
        examples = pa.table({
            "messages": [json.dumps(task.student_messages(row["input"])) for row in rows],
            "target": [row["target"] for row in rows],
            "input": [row["input"] for row in rows], "label": [row["label"] for row in rows]})
        base = self.student_model if unit.settings.from_base or r == 0 else self._model(unit, r - 1)
        stats = self.trainer(examples, base, model, unit.key, unit.train_seed,
                             labels=list(task.labels))
        curve = stats.pop("loss_curve", [])  # a table, not a manifest entry
        loss = self._write(stage_dir, pa.table({
            "step": pa.array(range(1, len(curve) + 1), pa.int32()),
            "loss": pa.array(curve, pa.float64())}))
        return StageResult(loss, {**stats, "base_model": base})

    def _predict(self, task: Task, mining: pa.Table, test: pa.Table, model: str,
                 stage_dir: str) -> pa.Table:
        """The new student over the mining set and the test set, in one pass."""
        both = pa.concat_tables([mining, test])
        sampling = sampling_params(self.cfg.student, task.cfg.student_sampling)
        generated = self.student_gen(student_requests(both, task, sampling), model, "predict")
        self.store.write_table(stage_dir, generated, name=GENERATIONS)
        predictions = pa.concat_tables([grade(mining, generated, task, "train"),
                                        grade(test, generated, task, "test")])
        return self._write(stage_dir, predictions)

    def _teacher_held(self, work: Callable[[], StageResult]) -> StageResult:
        """Run an augment stage with the teacher's engines up from its first call to its
        last (asks, answer checks, top-ups): without keep_warm they would stop and start
        again between calls, an engine start each."""
        holding = getattr(self.teacher_gen, "holding", None)  # an API or a fake has none
        with holding(self.teacher_model) if holding else nullcontext():
            return work()

    def _augment(self, unit: Unit, r: int, errors: pa.Table, mining: pa.Table,
                 predictions: pa.Table, train_set: pa.Table, test: pa.Table,
                 validation: pa.Table, stage_dir: str) -> StageResult:
        """The strategy picks the targets; the teacher is asked about each until its quota is
        accepted or its tries run out. With no training rows yet, the targets are what the
        synthetic seed is written from (s3's rationales, zerogen's label slots)."""
        task, teacher, settings = unit.task, self.cfg.teacher, unit.settings
        sampling = sampling_params(teacher, task.cfg.teacher_sampling)
        generate = lambda req: self.teacher_gen(  # noqa: E731
            req, self.teacher_model, "augment", group=unit.key)
        budget = self.budgets.get((task.name, unit.train_seed, r))
        synthesizing = train_set.num_rows == 0 and r == 0
        generated_before, asked_before = [], 0
        if synthesizing:
            per_label = settings.rationales_per_label
            quota = seed_quota(settings.seed_rows_per_label, per_label)
            budget = budget if budget is not None else per_label * len(task.labels)
            rationales = EXAMPLE.empty_table()
            if unit.strategy.explains:
                rationales, rationale_requests_, rationale_answers = ask_rationales(
                    task, per_label, r, generate,
                    lambda labels, sample: rationale_requests(
                        task, labels, per_label, r, sampling, teacher.constrained, sample),
                    teacher.max_tries)
                self.store.write_table(stage_dir, rationales, name=RATIONALES)
                generated_before = [rationale_answers] if rationale_answers is not None else []
                asked_before = rationale_requests_.num_rows
        else:
            quota = teacher.n_per_error * (self.cfg.rounds - 1 if settings.one_shot else 1)
        view = RoundView(errors=errors, mining=with_outputs(mining, predictions)[0],
                         budget=budget,
                         rng=random.Random(f"{task.name}:{unit.train_seed}:{r}"),
                         task=task.name, labels=tuple(task.labels))
        targets = (unit.strategy.seed_targets(view, rationales) if synthesizing
                   else unit.strategy.targets(view))
        seed_rows = train_set.filter(pc.equal(train_set["origin"], "seed"))
        # the real texts a candidate must look like: the training set's, or (s3, whose
        # training set is synthetic) the validation set's; those it must not leak: test and
        # validation
        mines_validation = settings.mine_from == "validation"
        real = validation if mines_validation else seed_rows
        # worked examples: seed rows, or (s3, no seed) other validation rows of the label
        demo_pool = seed_rows if seed_rows.num_rows else real
        prompts = task.s3_prompts if unit.strategy.explains else task.prompts
        checks = teacher.check_answers if teacher.check_answers is not None \
            else task.checkable_answers
        check = AnswerCheck(  # logged as its own step: "[check] N rows ..."
            task, lambda req: self.teacher_gen(req, self.teacher_model, "check", group=unit.key),
            sampling) if checks else None
        filter_ = CandidateFilter(task, r, teacher.model, quota,
                                  train_set.column("input").to_pylist(),
                                  test.column("input").to_pylist()
                                  + validation.column("input").to_pylist(),
                                  teacher.near_dup_threshold,
                                  style_texts=(real if mines_validation
                                               else train_set).column("input").to_pylist(),
                                  prompt_hash=prompts.hash, check=check)
        rules = task.cfg.stop or self.cfg.stop
        cap, over = request_cap(rules, self.history[unit.key], teacher.prices, asked_before)
        requests, generated, candidates = ask_teacher(
            targets, generate,
            lambda rows, sample: teacher_requests(rows, task, quota, r, sampling,
                                                  teacher.constrained, sample, demo_pool,
                                                  unit.strategy.explains),
            filter_, teacher.max_tries, max_requests=cap, over_budget=over)
        checked = check.generated if check else []
        self.store.write_table(stage_dir, pa.concat_tables([*generated_before, generated,
                                                            *checked]), name=GENERATIONS)
        return StageResult(self._write(stage_dir, candidates),
                           {"targets": len(set(requests.column("seed_id").to_pylist()))
                            if requests.num_rows else 0, "quota": quota,
                            "requests": requests.num_rows + asked_before,
                            "check_requests": sum(t.num_rows for t in check.requests)
                            if check else 0,
                            **({"rationales": rationales.num_rows} if synthesizing
                               and unit.strategy.explains else {})})
