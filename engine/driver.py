"""The round loop: TRAIN -> PREDICT -> GRADE -> MINE -> AUGMENT, for every task of a job.

`RoundLoop` is plain Python over injected backends (fakes in unit tests, Ray Train/vLLM for
real). `DriverActor` runs it inside Ray, so the job survives a client disconnect and calls
`ray.get` only at stage boundaries. A stage whose manifest exists is loaded, not re-run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from engine.backends import StudentTrainer, TextGenerator
from engine.config import RunConfig
from engine.metrics import generation_usage, round_metrics
from engine.records import EXAMPLE
from engine.sampling import sampling_params
from engine.stages.augment import accepted_examples, normalize_text, parse_candidates, teacher_requests
from engine.stages.mine import mine_errors
from engine.stages.predict import grade, student_requests
from engine.storage import RunStorage
from engine.tasks import Task

GENERATIONS = "generations"  # the raw GENERATED rows a stage produced, next to its output


@dataclass
class StageResult:
    """What every stage gives the round: its table (stored as the stage's Parquet) and facts
    about the run kept in its manifest (the train stage's stats)."""

    table: pa.Table
    info: dict = field(default_factory=dict)


class RoundLoop:
    def __init__(self, cfg: RunConfig, tasks: list[Task], student_model: str, teacher_model: str,
                 student_gen: TextGenerator, teacher_gen: TextGenerator, trainer: StudentTrainer,
                 log: Callable[[str], None] = print):
        self.cfg, self.tasks, self.log = cfg, tasks, log
        self.student_model, self.teacher_model = student_model, teacher_model
        self.student_gen, self.teacher_gen, self.trainer = student_gen, teacher_gen, trainer
        self.store = RunStorage(cfg.run_dir)

    def run(self, splits: dict | None = None) -> Iterator[list[dict]]:
        """Yield the metrics of every task after each round.

        splits: task name -> (seed rows, test rows), as read at preflight; read here if absent.
        """
        splits = splits or {t.name: t.seed_and_test() for t in self.tasks}
        train_sets = {t.name: pa.Table.from_pylist(splits[t.name][0], schema=EXAMPLE)
                      for t in self.tasks}
        for r in range(self.cfg.rounds):
            metrics = []
            for task in self.tasks:
                test = pa.Table.from_pylist(splits[task.name][1], schema=EXAMPLE)
                m, added = self.run_round(task, r, train_sets[task.name], test)
                train_sets[task.name] = pa.concat_tables([train_sets[task.name], added])
                metrics.append(m)
            yield metrics

    def run_round(self, task: Task, r: int, train_set: pa.Table, test: pa.Table):
        """One round of one task; returns (metrics, accepted examples for the next round)."""
        timings: dict[str, float] = {}
        train_set = self._stage(task, r, "data", timings,
                                lambda d: self._write(d, train_set)).table
        # The student as other processes open it: a local path, or a URI for a remote run_dir.
        model = self.store.location(f"{self.store.stage_dir(task.name, r, 'train')}/model")
        train_stats = self._stage(task, r, "train", timings,
                                  lambda d: self._train(task, train_set, model, d)).info
        seed_rows = train_set.filter(pc.equal(train_set["origin"], "seed"))
        predictions = self._stage(task, r, "predict", timings,
                                  lambda d: self._predict(task, seed_rows, test, model, d)).table
        errors = self._stage(task, r, "mine", timings,
                             lambda d: self._write(d, mine_errors(train_set, predictions))).table
        last_round = r == self.cfg.rounds - 1
        candidates = None if last_round else self._stage(
            task, r, "augment", timings,
            lambda d: self._augment(task, r, errors, train_set, test, d)).table
        added = accepted_examples(candidates) if candidates is not None else EXAMPLE.empty_table()
        usage = {"predict": self._usage(task, r, "predict", self.cfg.student.prices)}
        if not last_round:
            usage["augment"] = self._usage(task, r, "augment", self.cfg.teacher.prices)
        metrics = round_metrics(task.name, r, train_set, predictions, errors, candidates,
                                train_stats, timings, usage)
        self.store.write_json(f"{self.store.round_dir(task.name, r)}/metrics.json", metrics)
        return metrics, added

    # -- stage plumbing ---------------------------------------------------------------------
    def _stage(self, task: Task, r: int, name: str, timings: dict,
               compute: Callable[[str], pa.Table | StageResult]) -> StageResult:
        """Load a finished stage, or run it: outputs first, manifest last. `compute` returns
        the stage's table, or a StageResult whose `info` goes into the manifest."""
        stage_dir = self.store.stage_dir(task.name, r, name)
        if self.store.is_complete(stage_dir):
            self.log(f"[{task.name} r{r}] {name}: done before, loading")
            timings[name] = 0.0
            manifest = self.store.read_manifest(stage_dir)
            # "result": where engines before StageResult kept the train stage's stats
            info = manifest.get("info", manifest.get("result")) or {}
            return StageResult(self.store.read_table(stage_dir), info)
        self.log(f"[{task.name} r{r}] {name} ...")
        self.store.begin_stage(stage_dir)
        start = time.time()
        result = compute(stage_dir)
        if isinstance(result, pa.Table):
            result = StageResult(result)
        timings[name] = round(time.time() - start, 2)
        self.store.finish_stage(stage_dir, name, task=task.name, round=r,
                                seconds=timings[name], rows=result.table.num_rows,
                                info=result.info)
        return result

    def _usage(self, task: Task, r: int, stage: str, prices) -> dict | None:
        """Tokens, failures and cost of a stage's generations (stored with the stage); None
        for a stage finished by an engine version that did not keep them."""
        stage_dir = self.store.stage_dir(task.name, r, stage)
        if not self.store.has_table(stage_dir, GENERATIONS):
            return None
        return generation_usage(self.store.read_table(stage_dir, GENERATIONS), prices)

    def _write(self, stage_dir: str, table: pa.Table) -> pa.Table:
        self.store.write_table(stage_dir, table)
        return table

    # -- stages -----------------------------------------------------------------------------
    def _train(self, task: Task, train_set: pa.Table, model: str, stage_dir: str) -> StageResult:
        """Re-train from the *base* model every round (LLM2LLM), on seed + accepted rows.
        The stage's table is the loss curve; the training stats go into its manifest."""
        rows = train_set.to_pylist()
        examples = pa.table({
            "messages": [json.dumps(task.student_messages(r["input"])) for r in rows],
            "target": [r["target"] for r in rows]})
        stats = self.trainer(examples, self.student_model, model, task.name)
        curve = stats.pop("loss_curve", [])  # a table, not a manifest entry
        loss = self._write(stage_dir, pa.table({
            "step": pa.array(range(1, len(curve) + 1), pa.int32()),
            "loss": pa.array(curve, pa.float64())}))
        return StageResult(loss, stats)

    def _predict(self, task: Task, seed_rows: pa.Table, test: pa.Table, model: str,
                 stage_dir: str) -> pa.Table:
        """The new student over the mining set (seed rows) and the test set, in one pass."""
        both = pa.concat_tables([seed_rows, test])
        sampling = sampling_params(self.cfg.student, task.cfg.student_sampling)
        generated = self.student_gen(student_requests(both, task, sampling), model, "predict")
        self.store.write_table(stage_dir, generated, name=GENERATIONS)
        predictions = pa.concat_tables([grade(seed_rows, generated, task, "train"),
                                        grade(test, generated, task, "test")])
        return self._write(stage_dir, predictions)

    def _augment(self, task: Task, r: int, errors: pa.Table, train_set: pa.Table,
                 test: pa.Table, stage_dir: str) -> pa.Table:
        teacher = self.cfg.teacher
        sampling = sampling_params(teacher, task.cfg.teacher_sampling)
        requests = teacher_requests(errors, task, teacher.n_per_error, r, sampling,
                                    teacher.constrain_format)
        generated = self.teacher_gen(requests, self.teacher_model, "augment")
        self.store.write_table(stage_dir, generated, name=GENERATIONS)
        known = {normalize_text(t) for t in train_set.column("input").to_pylist()}
        test_inputs = {normalize_text(t) for t in test.column("input").to_pylist()}
        candidates = parse_candidates(errors, requests, generated, task, r, teacher.model,
                                      teacher.n_per_error, known, test_inputs)
        return self._write(stage_dir, candidates)
