"""`s3`: Synthesis Step by Step (arXiv 2310.13671). No labelled training rows: round 0 writes
a synthetic seed by explain-then-generate (engine/stages/synthesize.py); every later round
trains on it plus what was added, mines the errors on the task's *real validation* rows (never
trained on, never the test set; `strategy.mine_from: validation`) and asks the teacher for
new examples like each misclassified one, shown with its true label (error extrapolation,
prompts/s3/)."""

from __future__ import annotations

from engine.strategies.base import Strategy, register


@register
class S3(Strategy):
    name = "s3"
    summary = ("no labelled seed: explain-then-generate one, then extrapolate the errors on "
               "the real validation rows")
    uses_seed = False
    synthesizes_seed = True
    explains = True
    second_text_templates = ("example_user_second", "extrapolate_user_second")
    builtin_pair_prompts = "s3/pair.yaml"
    budget_rank = 1  # where the job has no llm2llm unit
    # the paper: errors on the real validation rows, one new example per error (Alg. 2), the
    # errors kept to the validation rows' label mix
    implied = {"mine_from": "validation", "rows_per_error": 1, "stratify_errors": True}

    def prompts(self, task):
        return task.s3_prompts

    @classmethod
    def task_problems(cls, task, index: int) -> list[str]:
        if task.s3_prompts is None or not task.labels:
            return [f"tasks.{index} ({task.name}): strategy s3 needs a classification task "
                    f"with an s3 prompt file (prompts/s3/classification.yaml, or "
                    f"tasks[].s3_prompts)"]
        return []
