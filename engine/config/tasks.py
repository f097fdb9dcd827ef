"""The tasks section: where a task's rows come from, how they read, its own overrides."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from engine.config.base import Strict
from engine.config.strategy import StopConfig, StrategyConfig


class DataConfig(Strict):
    """Where a task's rows come from: a local .jsonl/.parquet file, or `hub:<name>[:<subset>]`."""

    train: str | None = Field(None, description="training rows (the seed is drawn from them)")
    test: str | None = Field(None, description="test rows, evaluated every round")
    validation: str | None = Field(
        None, description="real validation rows a strategy mines errors from (s3); unset: "
                          "n_validation rows of train that are not in the seed")


class SamplingOverride(Strict):
    """A task's own sampling for one role; unset fields keep the role's values."""

    temperature: float | None = Field(None, ge=0, description="sampling temperature")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling mass")
    max_tokens: int | None = Field(None, ge=1, description="tokens generated per request")


class TaskConfig(Strict):
    """A task: a built-in name (gsm8k, trec, sst2, imdb, rte, qnli, adversarialqa, arithmetic,
    reviews) or a custom definition.

    Fields left unset take the built-in preset's values (engine/tasks/presets.py).
    """

    name: str = Field(description="built-in task name, or any name for a task defined here "
                                  "(letters, digits, '_', '-', '.'; it names its folder)")
    type: Literal["math", "classification", "arithmetic", "reviews", "qa",
                  "multiple_choice"] | None = Field(
        None, description="task type of a custom task (a built-in name sets it)")
    data: DataConfig = Field(DataConfig(), description="where the rows come from")
    fields: dict[str, str] = Field(
        {}, description="task role -> column in the files (question/answer, text/label, "
                        "context/question/answers for qa, context/choices/label for "
                        "multiple_choice; a sentence-pair task adds text_b)")
    text_names: list[str] = Field(
        [], description="a sentence-pair task's names of its two texts, as the student and "
                        "teacher see them (default: Text, Text B)")
    multiline: bool = Field(
        False, description="classification: an example may span lines (a review, a "
                           "paragraph): the teacher's text is every line up to its Label line; "
                           "false keeps the first line (small teachers run on into echoes)")
    labels: list[str] = Field(
        [], description="classification: the label names the student must answer with")
    label_names: dict[str, str] = Field({}, description="raw label value in the data -> label name")
    description: str | None = Field(
        None, description="one line on what the task is, shown to student and teacher")
    prompts: str | None = Field(
        None, description="prompt template file; default prompts/llm2llm/<type>.yaml")
    s3_prompts: str | None = Field(
        None, description="the s3 strategy's prompt template file; default prompts/s3/<type>.yaml")
    n_seed: int | None = Field(
        None, ge=0, description="seed rows taken from train (after shuffling); 0: no labelled "
                                "seed (S3's setting: s3 and zerogen synthesize one)")
    seed_fraction: float | None = Field(None, gt=0, le=1, description="or a fraction of train")
    n_test: int | None = Field(100, ge=1, description="test rows evaluated each round (null: all)")
    n_validation: int = Field(
        200, ge=0, description="real validation rows mined for errors (s3, mine_from: "
                               "validation): from data.validation, else from train after the "
                               "seed (where train is also the test file, they are set aside "
                               "whether used or not, so every strategy has the same test rows)")
    n_guard: int = Field(
        0, ge=0, description="held-out rows of train (after the seed and validation's share) "
                             "that choose the round a unit ships: the round whose student "
                             "scores best on them (compare's `chosen` column, export); the "
                             "teacher never reads them, unlike the rows errors are mined from. "
                             "Where train is also the test file they come before the test "
                             "rows; with a test file of its own, set n_seed (the default seed "
                             "is all of train)")
    student_sampling: SamplingOverride = Field(
        SamplingOverride(), description="this task's student sampling (e.g. max_tokens: 8 for "
                                        "labels beside a math task in the same job)")
    teacher_sampling: SamplingOverride = Field(
        SamplingOverride(), description="this task's teacher sampling")
    strategy: StrategyConfig | None = Field(
        None, description="this task's own strategy (null: the job's)")
    stop: StopConfig | None = Field(
        None, description="this task's own stopping rules and budget (null: the job's)")

    @field_validator("name")
    @classmethod
    def _a_folder_name(cls, name: str) -> str:
        """The name is its units' folder under run_dir: nothing that leaves it."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or set(name) == {"."}:
            fixed = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "my_task"
            raise ValueError(f"{name!r} cannot name a folder under run_dir; use letters, "
                             f"digits, '_', '-' and '.' (e.g. {fixed!r})")
        return name
