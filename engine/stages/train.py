"""TRAIN: the student on the round's training set (seed + accepted rows), through the trainer
backend (Ray Train + DeepSpeed, or a fake in unit tests)."""

from __future__ import annotations

import json

import pyarrow as pa

from engine.backends import StudentTrainer
from engine.records import StageResult
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
