"""Turning examples into token ids and loss masks. Pure Python, so it is unit-testable."""

from __future__ import annotations

import math
import random

IGNORE = -100  # label value the loss skips (prompt tokens and padding)


def build_features(prompt_ids: list[int], target_ids: list[int], eos_id: int,
                   max_len: int) -> dict:
    """Loss on the answer and its end-of-turn token only, never on the prompt.

    When too long, the prompt is cut from the left: the answer and the end of the question
    are what the student needs to see.
    """
    answer = list(target_ids) + [eos_id]
    answer = answer[:max_len]
    keep_prompt = max(0, max_len - len(answer))
    prompt = list(prompt_ids)[-keep_prompt:] if keep_prompt else []
    return {"input_ids": prompt + answer, "labels": [IGNORE] * len(prompt) + answer}


def collate(features: list[dict], pad_id: int) -> dict:
    """Right-pad a batch to its longest row; returns plain lists (the caller makes tensors)."""
    width = max(len(f["input_ids"]) for f in features)
    out = {"input_ids": [], "labels": [], "attention_mask": []}
    for f in features:
        pad = width - len(f["input_ids"])
        out["input_ids"].append(f["input_ids"] + [pad_id] * pad)
        out["labels"].append(f["labels"] + [IGNORE] * pad)
        out["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
    return out


def encoder_features(input_ids: list[int], label_id: int, max_len: int,
                     sep_id: int | None = None) -> dict:
    """An encoder student's row: the text's token ids (cut to max_len, keeping the closing
    [SEP] a BERT-style encoder was trained with) and its label's index in the task's labels."""
    ids = list(input_ids)
    if len(ids) > max_len:
        ids = ids[:max_len - 1] + [sep_id] if sep_id is not None else ids[:max_len]
    return {"input_ids": ids, "label": label_id}


def collate_encoder(features: list[dict], pad_id: int) -> dict:
    """Right-pad a batch of encoder rows; `labels` is one class index per row."""
    width = max(len(f["input_ids"]) for f in features)
    return {"input_ids": [f["input_ids"] + [pad_id] * (width - len(f["input_ids"]))
                          for f in features],
            "attention_mask": [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"]))
                               for f in features],
            "labels": [f["label"] for f in features]}


def epoch_batches(n_rows: int, batch_size: int, epochs: float, seed: int) -> list[list[int]]:
    """Row indices per step: a fresh shuffle each epoch, a fractional last epoch allowed.

    Every worker calls this with the same n_rows (Ray Data splits with equal=True), so all
    ranks take the same number of steps and no collective hangs.
    """
    steps_per_epoch = max(1, math.ceil(n_rows / batch_size))
    total = max(1, math.ceil(epochs * steps_per_epoch))
    batches: list[list[int]] = []
    epoch = 0
    while len(batches) < total:
        order = list(range(n_rows))
        random.Random(seed + epoch).shuffle(order)
        batches += [order[i:i + batch_size] for i in range(0, n_rows, batch_size)]
        epoch += 1
    return batches[:total]


def checkpoint_steps(n_batches: int, steps_per_epoch: int, grad_accum: int,
                     every: str | int) -> list[int]:
    """The micro-steps (1-based) after which training saves a checkpoint.

    Always on an optimizer-step boundary (a checkpoint mid-accumulation would lose the
    gradients gathered so far), never after the last step: the finished model is saved anyway.
    every: "epoch" (at each epoch's end, or the first boundary after it), N (every N optimizer
    steps) or "never".
    """
    if every == "never":
        return []
    if every == "epoch":
        ends = range(steps_per_epoch, n_batches, steps_per_epoch)
        steps = {math.ceil(e / grad_accum) * grad_accum for e in ends}
    else:
        steps = set(range(int(every) * grad_accum, n_batches + 1, int(every) * grad_accum))
    return sorted(s for s in steps if s < n_batches)
