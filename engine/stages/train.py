"""TRAIN: the student on the round's training set (seed + accepted rows), through the trainer
backend (Ray Train + DeepSpeed, or a fake in unit tests)."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.compute as pc

from engine.backends import StudentTrainer
from engine.records import SEED, VALIDATION, StageResult
from engine.tasks import Task


def train_student(task: Task, train_set: pa.Table, base: str, out: str, trainer: StudentTrainer,
                  unit_key: str, train_seed: int,
                  validation: pa.Table | None = None) -> StageResult:
    """Train from `base` (the base model every round, as LLM2LLM does, or the previous
    round's student) into `out`. The stage's table is the loss curve; the training stats go
    into its manifest. `validation`: the held-out rows `train.select_epoch: validation`
    chooses the epoch on."""
    stats = trainer(training_examples(task, train_set), base, out, unit_key, train_seed,
                    labels=list(task.labels),
                    validation=None if validation is None else
                    training_examples(task, validation))
    curve = stats.pop("loss_curve", [])  # a table, not a manifest entry
    return StageResult(loss_table(curve), {**stats, "base_model": base})


def at_added_share(train_set: pa.Table, share: float | None, rng: random.Random) -> pa.Table:
    """The rows a round trains on: the training set with its added rows (written by the
    rounds, not the seed: every row but the real ones (the seed's, and the validation rows
    seed_only+with_validation trains on), or where there are none, but round 0's synthetic
    seed) at `share` of it, as the S3 paper's Eq. 2 mixes p * P_add +
    (1 - p) * P(0): repeated (whole copies, then a random part) when they are fewer, a random
    subset when more. None: every row once."""
    if share is None or train_set.num_rows == 0:
        return train_set
    seeded = pc.is_in(train_set["origin"], value_set=pa.array([SEED, VALIDATION]))
    if not pc.any(seeded).as_py():
        seeded = pc.equal(train_set["round"], 0)
    seed, added = train_set.filter(seeded), train_set.filter(pc.invert(seeded))
    if seed.num_rows == 0 or added.num_rows == 0:
        return train_set
    want = round(share / (1 - share) * seed.num_rows)
    copies, rest = divmod(want, added.num_rows)
    picked = sorted(rng.sample(range(added.num_rows), rest))
    return pa.concat_tables([seed, *[added] * copies, added.take(pa.array(picked, pa.int64()))])


def training_examples(task: Task, rows: pa.Table) -> pa.Table:
    """A causal student learns `target` after its chat prompt; an encoder, `label` from
    `input`."""
    rows = rows.to_pylist()
    return pa.table({
        "messages": [json.dumps(task.student_messages(row["input"])) for row in rows],
        "target": [row["target"] for row in rows],
        "input": [row["input"] for row in rows], "label": [row["label"] for row in rows]})


def loss_table(curve: list[float]) -> pa.Table:
    return pa.table({"step": pa.array(range(1, len(curve) + 1), pa.int32()),
                     "loss": pa.array(curve, pa.float64())})
