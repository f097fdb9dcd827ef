"""Running a stage against the run directory: load it if finished, copy it from a twin (a
round-0 twin, or any unit of the same task and training seed whose finished stage had the same
inputs), or compute it (outputs first, manifest last). The round loop (engine/driver.py) runs
every stage through here, so resume and sharing are the same for all of them.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import pyarrow as pa

from engine.errors import StorageError, storage_problem
from engine.metrics import generation_usage
from engine.records import GENERATIONS, StageResult
from engine.storage import RunStorage
from engine.strategies import Unit


# Round-0 stages every strategy shares for a task and training seed (see round0_twin), and the
# stages of any round a unit copies from another whose inputs were the same (same_inputs_twin).
SHARED_STAGES = ("train", "predict", "mine")


class Aborted(Exception):
    """Raised at a stage boundary of a group side by side after another group's error
    stopped the job."""


class StageStore:
    """The stages of a job's units in its run directory."""

    def __init__(self, store: RunStorage, units: list[Unit], log: Callable[[str], None]):
        self.store, self.units, self.log = store, units, log
        self.abort = threading.Event()  # set: groups side by side start no new stage

    def run(self, unit: Unit, r: int, name: str, timings: dict,
            compute: Callable[[str], pa.Table | StageResult],
            fingerprint: str | None = None) -> StageResult:
        """Load a finished stage, or run it: outputs first, manifest last. `compute` gets the
        stage's folder (where a trainer saves its model) and returns the stage's table, or a
        StageResult (its `info` goes into the manifest, `beside` tables next to the table).
        The stage's seconds go into `timings`. `fingerprint`: a hash of everything the stage
        reads (engine/fingerprint.py), kept in the manifest; a finished stage of another unit
        with the same one is copied instead of computed."""
        if self.abort.is_set():
            raise Aborted()
        stage_dir = self.store.stage_dir(unit.key, r, name)
        if self.store.is_complete(stage_dir):
            self.log(f"[{unit.key} r{r}] {name}: done before, loading")
            timings[name] = 0.0
            return StageResult(self.store.read_table(stage_dir), self._info(stage_dir))
        twin = self.round0_twin(unit, r, name)
        twin_round = 0
        if twin is None:
            twin, twin_round = self.same_inputs_twin(unit, r, name, fingerprint) or (None, 0)
        if twin is not None:
            return self._copy(unit, r, twin, twin_round, name, timings, fingerprint)
        self.log(f"[{unit.key} r{r}] {name} ...")
        self.store.begin_stage(stage_dir)
        start = time.time()
        result = self._compute(stage_dir, compute)
        for beside, table in result.beside.items():
            self.store.write_table(stage_dir, table, name=beside)
        self.store.write_table(stage_dir, result.table)
        timings[name] = round(time.time() - start, 2)
        self.store.finish_stage(stage_dir, name, task=unit.task.name, unit=unit.key, round=r,
                                started_at=start, seconds=timings[name],
                                rows=result.table.num_rows, info=result.info,
                                **({"fingerprint": fingerprint} if fingerprint else {}))
        return result

    def _compute(self, stage_dir: str, compute) -> StageResult:
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
        return StageResult(result) if isinstance(result, pa.Table) else result

    def _info(self, stage_dir: str) -> dict:
        manifest = self.store.read_manifest(stage_dir)
        # "result": where engines before StageResult kept the train stage's stats
        return manifest.get("info", manifest.get("result")) or {}

    def round0_twin(self, unit: Unit, r: int, name: str) -> Unit | None:
        """An earlier unit whose finished round-0 `name` stage this unit's would repeat.

        Round 0 trains on the seed alone from the base model, so every strategy with the same
        task and training seed has the same round-0 student (training is deterministic given
        the seed), and those that mine the same rows (the seed, or the real validation rows)
        the same predictions and errors: a compare computes them once per task and seed."""
        if r != 0 or name not in SHARED_STAGES or not unit.strategy.uses_seed:
            return None
        on_validation = lambda u: u.settings.mine_from == "validation"  # noqa: E731
        for other in self.units:
            if other is unit:
                return None
            same = (other.task.name, other.train_seed) == (unit.task.name, unit.train_seed) \
                and other.settings.train_on_validation == unit.settings.train_on_validation \
                and (name == "train" or on_validation(other) == on_validation(unit))
            if same and other.strategy.uses_seed and \
                    self.store.is_complete(self.store.stage_dir(other.key, 0, name)):
                return other
        return None

    def same_inputs_twin(self, unit: Unit, r: int, name: str,
                         fingerprint: str | None) -> tuple[Unit, int] | None:
        """(unit, round) of a finished `name` stage of the same task and training seed that
        read exactly what this one would (its manifest's fingerprint): e.g. s3 and its
        no-extrapolation control train the same round-1 student on the same written seed.
        Only earlier units of the group and earlier rounds are looked at (the group runs its
        units in order, so those are the ones that can be finished)."""
        if fingerprint is None or name not in SHARED_STAGES:
            return None
        for other in self.units:
            if (other.task.name, other.train_seed) != (unit.task.name, unit.train_seed):
                continue
            for round_ in range(r + 1):
                if other is unit and round_ == r:
                    break
                # the manifest first: checking a stage's files reads all of them
                if self.fingerprint(other, round_, name) == fingerprint and \
                        self.store.is_complete(self.store.stage_dir(other.key, round_, name)):
                    return other, round_
        return None

    def fingerprint(self, unit: Unit, r: int, name: str) -> str | None:
        """The inputs' fingerprint in a stage's manifest; None without a manifest, or for a
        stage an engine before fingerprints finished. The manifest alone: a caller asking
        about a stage it has not just run or loaded checks it with is_complete."""
        try:
            return self.store.read_manifest(self.store.stage_dir(unit.key, r, name)).get(
                "fingerprint")
        except (OSError, ValueError):  # no manifest yet, or one cut short
            return None

    def _copy(self, unit: Unit, r: int, twin: Unit, twin_round: int, name: str, timings: dict,
              fingerprint: str | None = None) -> StageResult:
        """This unit's stage as a copy of its twin's, recorded as one. Generations copied
        count as cached: none were generated for this unit."""
        source = self.store.stage_dir(twin.key, twin_round, name)
        stage_dir = self.store.stage_dir(unit.key, r, name)
        self.log(f"[{unit.key} r{r}] {name}: the same as {twin.key}'s"
                 f"{f' round {twin_round}' if twin_round != r else ''}, copied")
        self.store.begin_stage(stage_dir)
        start = time.time()  # a copy is a stage too: its span shows in the manifest
        self.store.copy_stage(source, stage_dir)
        if self.store.has_table(stage_dir, GENERATIONS):
            generated = self.store.read_table(stage_dir, GENERATIONS)
            generated = generated.set_column(
                generated.schema.get_field_index("cached"), "cached",
                pa.array([True] * generated.num_rows)).set_column(
                generated.schema.get_field_index("attempts"), "attempts",
                pa.array([0] * generated.num_rows, pa.int32()))
            self.store.write_table(stage_dir, generated, name=GENERATIONS)
        info = self._info(source)
        table = self.store.read_table(stage_dir)
        timings[name] = 0.0
        self.store.finish_stage(stage_dir, name, task=unit.task.name, unit=unit.key, round=r,
                                started_at=start, seconds=0.0, rows=table.num_rows, info=info,
                                copied_from=twin.key,
                                **({"copied_from_round": twin_round} if twin_round != r else {}),
                                **({"fingerprint": fingerprint} if fingerprint else {}))
        return StageResult(table, info)

    # -- what a round reads back ------------------------------------------------------------
    def usage(self, unit: Unit, r: int, stage: str, prices) -> dict | None:
        """Tokens, failures and cost of a stage's generations (stored with the stage); None
        for a stage finished by an engine version that did not keep them."""
        stage_dir = self.store.stage_dir(unit.key, r, stage)
        if not self.store.has_table(stage_dir, GENERATIONS):
            return None
        return generation_usage(self.store.read_table(stage_dir, GENERATIONS), prices)

    def previous(self, unit: Unit, r: int) -> tuple[pa.Table, pa.Table] | None:
        """Round r-1's predictions and mined errors (for the fix rate), if it has them."""
        if r == 0:
            return None
        dirs = [self.store.stage_dir(unit.key, r - 1, s) for s in ("predict", "mine")]
        if not all(self.store.is_complete(d) for d in dirs):
            return None
        return self.store.read_table(dirs[0]), self.store.read_table(dirs[1])

    def model(self, unit: Unit, r: int) -> str:
        """Round r's student as other processes open it: a local path, or a URI."""
        return self.store.location(f"{self.store.stage_dir(unit.key, r, 'train')}/model")

    def augmented(self, unit: Unit, r: int) -> bool:
        return self.store.is_complete(self.store.stage_dir(unit.key, r, "augment"))
