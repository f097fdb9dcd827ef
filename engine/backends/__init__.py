"""Backends behind small protocols: text generation and student training.

The real implementations (Ray Data over vLLM, Ray Train + DeepSpeed) are what run by default;
unit tests swap in the deterministic fakes from tests/fakes.py.
"""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa


class TextGenerator(Protocol):
    def __call__(self, requests: pa.Table, model: str, stage: str, group: str = "") -> pa.Table:
        """requests has GENERATION_INPUT columns; returns GENERATED rows, one per request.
        `group`: whose rows these are (the unit's key), so a shared engine can take turns."""


class StudentTrainer(Protocol):
    def __call__(self, examples: pa.Table, base_model: str, out_dir: str, unit: str,
                 seed: int, labels: list[str] = (), validation: pa.Table | None = None) -> dict:
        """Train a student from base_model on examples with this training seed; save an HF
        folder at out_dir (a local path or a filesystem URI). `unit` (its key) names the run
        in logs.
        examples: messages + target (a causal student), input + label (an encoder, whose
        head has one output per name in `labels`, the task's label names in order).
        validation: rows of the same columns, held out (never test rows), that
        `train.select_epoch: validation` scores each epoch on to keep the best one.

        Returns training stats (steps, final loss, tokens, seconds) for the manifest, and
        `loss_curve`, the loss per step on rank 0.
        """
