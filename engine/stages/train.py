"""TRAIN: the student on the round's training set (seed + accepted rows), through the trainer
backend (Ray Train + DeepSpeed, or a fake in unit tests)."""

from __future__ import annotations

import json

import pyarrow as pa

from engine.backends import StudentTrainer
from engine.records import StageResult
from engine.tasks import Task


def train_student(task: Task, train_set: pa.Table, base: str, out: str, trainer: StudentTrainer,
                  unit_key: str, train_seed: int) -> StageResult:
    """Train from `base` (the base model every round, as LLM2LLM does, or the previous
    round's student) into `out`. The stage's table is the loss curve; the training stats go
    into its manifest."""
    rows = train_set.to_pylist()
    # a causal student learns `target` after its chat prompt; an encoder, `label` from `input`
    examples = pa.table({
        "messages": [json.dumps(task.student_messages(row["input"])) for row in rows],
        "target": [row["target"] for row in rows],
        "input": [row["input"] for row in rows], "label": [row["label"] for row in rows]})
    stats = trainer(examples, base, out, unit_key, train_seed, labels=list(task.labels))
    curve = stats.pop("loss_curve", [])  # a table, not a manifest entry
    return StageResult(loss_table(curve), {**stats, "base_model": base})


def loss_table(curve: list[float]) -> pa.Table:
    return pa.table({"step": pa.array(range(1, len(curve) + 1), pa.int32()),
                     "loss": pa.array(curve, pa.float64())})
