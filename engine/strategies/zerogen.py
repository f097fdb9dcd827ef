"""`zerogen`: as many rows asked about (compare.match), written from the task's description and
label names alone, no seed row shown (ZeroGen-style one-shot synthesis). Shows what the seed
rows, and the errors among them, add to the teacher's prompt."""

from __future__ import annotations

import pyarrow as pa

from engine.records import DESCRIPTION, EXAMPLE
from engine.strategies.base import RoundView, Strategy, register


@register
class ZeroGen(Strategy):
    name = "zerogen"
    summary = "as many rows asked about, written from the task description and labels alone"
    synthesizes_seed = True
    targets_errors = False  # its own draw: +label_mix and +stratify would do nothing
    # on a pair task ZeroGen writes the hypothesis to a real unlabelled premise, as S3 does
    second_text_templates = ("zerogen_user_second",)

    def targets(self, view: RoundView) -> pa.Table:
        """Label slots, the labels in turn (one empty label for tasks without labels)."""
        n = view.errors.num_rows if view.budget is None else view.budget
        labels = list(view.labels) or [""]
        rows = []
        for k in range(n):
            slot = f"{DESCRIPTION}:{view.task}:{k}"
            rows.append(dict(id=slot, task=view.task, input="", target="",
                             label=labels[k % len(labels)], origin=DESCRIPTION, round=-1,
                             seed_id=slot, trigger_prediction="", teacher_model="",
                             prompt_hash="", sampling=""))
        return pa.Table.from_pylist(rows, schema=EXAMPLE)

    def seed_targets(self, view: RoundView) -> pa.Table:
        """No labelled seed: the synthetic seed is written from label slots too (the budget:
        the s3 unit's rationales, or rationales_per_label per label)."""
        return self.targets(view)

    @classmethod
    def task_problems(cls, task, index: int) -> list[str]:
        if "zerogen_user" not in task.prompts.templates:
            return [f"tasks.{index}.prompts: strategy zerogen needs a `zerogen_user` "
                    f"template in {task.prompts.path} (see prompts/llm2llm/math.yaml)"]
        return []
