"""What every task provides: rows, the student prompt, a grader, the teacher prompt and parser.

A concrete task type (engine/tasks/__init__.py TASK_TYPES: math, classification, arithmetic,
reviews, qa, multiple_choice) fills in the few methods that differ; the seed/test selection, prompt
templating and row ids are shared here.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import yaml

from engine.config import TaskConfig
from engine.errors import DataError
from engine.records import GUARD, VALIDATION
from engine.tasks.loaders import check_source, pick_fields, read_source
from engine.tasks.row_checks import normal, not_in_training

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
# the marker of a list item a rationale may start with: "1.", "2)", "-", "*", "Reason 3:"
RATIONALE_MARKER = re.compile(r"^\s*(?:(?:reason\s*)?\d+\s*[.):]|[-*•])\s*", re.I)


class Splits(NamedTuple):
    """A task's rows by role (Task.splits)."""

    seed: list[dict]
    test: list[dict]
    validation: list[dict]  # mined for errors (mine_from: validation), or choosing epochs
    guard: list[dict]  # choose the round a unit ships; the teacher never reads them


@dataclass(frozen=True)
class PromptSet:
    """A prompt template file: its templates and the content hash recorded in lineage."""

    path: str
    hash: str
    templates: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> "PromptSet":
        raw = path.read_bytes()
        templates = yaml.safe_load(raw)
        return cls(str(path), hashlib.sha256(raw).hexdigest()[:12], templates)

    def render(self, name: str, **values) -> str:
        return self.templates[name].format(**values)

    def role_hashes(self) -> dict[str, str]:
        """Content hashes of the student's template and of the teacher's (all the others):
        editing one redoes only the stages that use it."""
        def digest(names: list[str]) -> str:
            text = "\n".join(f"{n}={self.templates[n]}" for n in sorted(names))
            return hashlib.sha256(text.encode()).hexdigest()[:12]

        student = [n for n in self.templates if n.startswith("student")]
        return {"student": digest(student),
                "teacher": digest([n for n in self.templates if n not in student])}


@dataclass(frozen=True)
class Parsed:
    """One example parsed from teacher output, or the reason it could not be."""

    input: str = ""
    target: str = ""
    label: str = ""
    reject_reason: str = ""


class Task:
    """Base task. Subclasses define `prompt_family`, `required_fields` and the per-type
    methods."""

    prompt_family = ""  # the built-in prompt file it uses: prompts/llm2llm/<family>.yaml
    checkable_answers = False  # solving a row again can confirm its answer (teacher.check_answers)
    # a row's label names what its text is (a class of a fixed set), so the real rows nearest
    # to a text can speak for its label (teacher.label_fit); not an answer worked out from it
    labels_name_text = False
    required_fields: tuple[str, ...] = ()

    def __init__(self, cfg: TaskConfig, seed: int):
        self.cfg = cfg
        self.name = cfg.name
        self.seed = seed
        self.shared_test_rows: list[dict] = []  # left out of the test set by splits()
        family = self.family_of(cfg)
        self.prompts = PromptSet.load(prompt_path(cfg, family))
        s3_path = s3_prompt_path(cfg, family)
        # the s3 strategy's templates; tasks of a type without them cannot run s3 (preflight)
        self.s3_prompts = PromptSet.load(s3_path) if s3_path.is_file() else None

    @classmethod
    def family_of(cls, cfg: TaskConfig) -> str:
        """The prompt family a task of this type with this config uses."""
        return cls.prompt_family

    # -- data ---------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Problems found without loading everything (files exist, fields mapped)."""
        where = f"tasks.{self.name}"
        missing = [f for f in self.required_fields if f not in self.cfg.fields]
        problems = [f"{where}.fields: missing mapping for {missing}"] if missing else []
        for split in ("train", "test"):
            source = getattr(self.cfg.data, split)
            if source is None:
                problems.append(f"{where}.data.{split}: not set")
            else:
                problems += check_source(source, f"{where}.data.{split}")
        if self.cfg.data.validation is not None:
            problems += check_source(self.cfg.data.validation, f"{where}.data.validation")
        return problems

    def source_rows(self, split: str) -> list[dict]:
        """Rows of a split as dicts with the task's role names (question/answer, text/label)."""
        source = getattr(self.cfg.data, split)
        return pick_fields(read_source(source, split), self.cfg.fields, source)

    def example(self, role_row: dict) -> tuple[str, str, str]:
        """(input, target, label) of a source row."""
        raise NotImplementedError

    def seed_and_test(self) -> tuple[list[dict], list[dict]]:
        """The seed training rows and the test rows, shuffled deterministically from the seed."""
        seed, test, *_ = self.splits(validation=False)
        return seed, test

    def splits(self, validation: bool = True) -> Splits:
        """(seed, test, validation, guard) rows. Validation rows (what s3 mines errors from)
        come from data.validation, else from train right after the seed, so they never overlap
        it; empty if not asked for. Guard rows (n_guard: held out to choose the round a unit
        ships, never shown to the teacher) come from train after the seed and validation's
        share. When train and test are the same source (a data set with one labelled split),
        the test rows are the ones after all of those."""
        train = self._as_examples(self.source_rows("train"), "train")
        random.Random(self.seed).shuffle(train)
        one_split = self.cfg.data.test == self.cfg.data.train
        if one_split:
            test = []
        else:
            test = self._as_examples(self.source_rows("test"), "test")
            random.Random(self.seed + 1).shuffle(test)
        if self.cfg.n_seed is not None:
            n_seed = self.cfg.n_seed
        elif self.cfg.seed_fraction:
            n_seed = max(1, round(self.cfg.seed_fraction * len(train)))
        else:
            n_seed = len(train) if not one_split else len(train) // 2
        held_out: list[dict] = []
        carved = n_seed + self.cfg.n_validation  # train rows set aside for validation
        if validation and self.cfg.data.validation:
            held_out = self._as_examples(self.source_rows("validation"), "validation")
            random.Random(self.seed + 2).shuffle(held_out)
            held_out = held_out[: self.cfg.n_validation]
        elif validation:
            held_out = train[n_seed:carved]
        for row in held_out:
            row["origin"] = VALIDATION
        # after validation's share, asked for or not, so adding a guard moves no other split;
        # a row with the text of one the student trains on or the teacher reads is skipped
        guard, seen = [], {normal(r["input"]) for r in train[:n_seed] + held_out}
        while len(guard) < self.cfg.n_guard and carved < len(train):
            if normal(train[carved]["input"]) not in seen:
                guard.append(train[carved])
            carved += 1
        for row in guard:
            row["origin"] = GUARD
        if one_split:  # after the rows validation may take, asked for or not: every strategy
            test = train[carved:]  # of a task is tested on the same rows
        # a test row that is a training row scores what the student saw, not what it learnt
        test, self.shared_test_rows = not_in_training(test, train[:n_seed] + held_out + guard)
        n_test = self.cfg.n_test or len(test)
        return Splits(train[:n_seed], test[:n_test], held_out, guard)

    def _as_examples(self, role_rows: list[dict], split: str) -> list[dict]:
        rows = []
        for n, role_row in enumerate(role_rows):
            try:
                text, target, label = self.example(role_row)
            except DataError as exc:  # name where the row is, so it can be fixed
                source = getattr(self.cfg.data, split) or f"task {self.name}'s {split} rows"
                raise DataError(f"{source}: row {n + 1}: {exc}") from None
            row_id = f"{self.name}:{split}:{n}"
            rows.append(dict(id=row_id, task=self.name, input=text, target=target, label=label,
                             origin="seed", round=-1, seed_id=row_id, trigger_prediction="",
                             teacher_model="", prompt_hash="", sampling=""))
        return rows

    # -- student ------------------------------------------------------------------------
    def student_messages(self, text: str) -> list[dict]:
        raise NotImplementedError

    def grade(self, output: str, label: str) -> tuple[str, bool]:
        """(extracted answer, correct?) of a student output."""
        raise NotImplementedError

    def round_scores(self, predictions) -> dict:
        """Scores a task reports beside accuracy (QA: F1), keyed like metrics.json."""
        return {}

    # -- teacher ------------------------------------------------------------------------
    @property
    def is_pair(self) -> bool:
        """Whether an example is two texts (a premise and a hypothesis, say)."""
        return False

    def first_text_pool(self) -> tuple[str, ...]:
        """A pair task's real first texts a teacher may write second texts on."""
        return ()

    def writing_second(self, first_texts: tuple[str, ...], draw: str = "") -> "Task":
        """This task as the teacher writes only second texts on real first ones (`draw`:
        what varies the choice of first texts, the round and training seed)."""
        raise NotImplementedError(f"task {self.name}: only a pair task writes second texts")

    def gate_text(self, text: str) -> str:
        """The part of an example's input the teacher wrote, which the quality gates judge:
        all of it, except where the input repeats what the teacher was given (QA's context)."""
        return text

    @property
    def labels(self) -> list[str]:
        """Label names a real example's text is not made of (quality gates); none here."""
        return []

    def teacher_templates(self) -> list[str]:
        """The teacher's prompt templates: a candidate made of their words is an echo."""
        return [t for n, t in self.prompts.templates.items() if not n.startswith("student")]

    def teacher_messages(self, row: dict, prediction: str, n: int, demos: list[dict] = (),
                         prompts: PromptSet | None = None) -> list[dict]:
        """The chat asking for n new examples like `row`; `demos` are other real rows of the
        same label a task may show as a worked example. `prompts`: the prompt set the
        strategy asks with (its plan's; default the task's own file)."""
        raise NotImplementedError

    def recomputed(self, question: str, output: str) -> str:
        """A model's answer to `question` as the task reads a teacher's (math: its steps
        recomputed by calculator); most tasks read it as written."""
        return output

    @property
    def description(self) -> str:
        return self.cfg.description or ""

    def render_values(self) -> dict:
        """Template values every prompt of the task may use beyond the request's own."""
        return {}

    def description_messages(self, row: dict, n: int) -> list[dict]:
        """A request from the task's description and labels alone (the zerogen strategy):
        the prompt file's `zerogen_user`, for a target whose origin is DESCRIPTION."""
        values = dict(description=self.description, labels=", ".join(self.labels),
                      label=row["label"], n=n, **self.render_values())
        return [{"role": "system", "content": self.prompts.render("teacher_system", **values)},
                {"role": "user", "content": self.prompts.render("zerogen_user", **values)}]

    # -- s3: explain-then-generate, error extrapolation --------------------------------------
    def rationale_messages(self, label: str, n: int) -> list[dict]:
        """S3's *explain* step: ask for n different reasons a text has `label`."""
        values = dict(description=self.description, labels=", ".join(self.labels), label=label,
                      n=n, **self.render_values())
        return [{"role": "system", "content": self._s3().render("teacher_system", **values)},
                {"role": "user", "content": self._s3().render("rationale_user", **values)}]

    @staticmethod
    def rationale_regex(n: int, max_words: int = 40) -> str:
        """n numbered one-line reasons of 3 to max_words words (for structured outputs)."""
        words = rf"(?:[^\n ]+ ){{2,{max_words - 1}}}[^\n ]+"
        return "".join(rf"{k}\. {words}\n" for k in range(1, n + 1))

    @staticmethod
    def parse_rationales(output: str, n: int) -> list[str]:
        """Up to n distinct reasons, each at least 3 words: the items of a numbered or
        bulleted list (plain lines when there is none; a line ending in ":" is a heading),
        without their markers and wrapping quotes."""
        lines = output.splitlines()
        if any(RATIONALE_MARKER.match(line) for line in lines):
            lines = [line for line in lines if RATIONALE_MARKER.match(line)]
        found: list[str] = []
        for line in lines:
            text = RATIONALE_MARKER.sub("", line).strip().strip('"').strip()
            if len(text.split()) >= 3 and not text.endswith(":") \
                    and text.lower() not in {f.lower() for f in found}:
                found.append(text)
        return found[:n]

    def _s3(self) -> PromptSet:
        if self.s3_prompts is None:
            raise ValueError(f"task {self.name}: no s3 prompt file for its type; set "
                             f"tasks[].s3_prompts")
        return self.s3_prompts

    @staticmethod
    def demonstrations(row: dict, pool: list[dict], k: int) -> list[dict]:
        """Up to k other rows of `pool` with row's label, chosen by the row's id: each target
        gets its own, so the teacher is not shown the same worked example every time."""
        same = [p for p in pool if p["label"] == row["label"] and p["id"] != row["id"]]
        return random.Random(row["id"]).sample(same, min(k, len(same)))

    def parse_teacher(self, output: str, seed_row: dict) -> list[Parsed]:
        raise NotImplementedError

    def teacher_format_regex(self, row: dict, n: int, max_words: int = 60) -> str:
        """A regex that every parseable teacher answer matches (for structured outputs);
        max_words bounds an example's text where the format has one."""
        raise NotImplementedError

    def _chat(self, system: str, user: str) -> list[dict]:
        """System prompt and one-shot first: a stable prefix for vLLM's prefix cache."""
        messages = [{"role": "system", "content": system}]
        t = self.prompts.templates
        if "one_shot_user" in t and "one_shot_assistant" in t:
            messages += [{"role": "user", "content": t["one_shot_user"]},
                         {"role": "assistant", "content": t["one_shot_assistant"]}]
        messages.append({"role": "user", "content": user})
        return messages


def prompt_path(cfg: TaskConfig, family: str) -> Path:
    """The task's own prompt file, else the built-in one of its prompt family."""
    return Path(cfg.prompts) if cfg.prompts else PROMPTS_DIR / "llm2llm" / f"{family}.yaml"


def s3_prompt_path(cfg: TaskConfig, family: str) -> Path:
    """The task's s3 prompt file, else the built-in one of its prompt family."""
    return Path(cfg.s3_prompts) if cfg.s3_prompts else PROMPTS_DIR / "s3" / f"{family}.yaml"


# the templates every run renders from a task's prompt file, and from its s3 file (others are
# optional: `teacher_answer` adds a worked example, `zerogen_user` is the zerogen strategy's)
REQUIRED_TEMPLATES = {"prompts": ("student", "teacher_system", "teacher_user"),
                      "s3_prompts": ("teacher_system", "rationale_user", "example_user",
                                     "extrapolate_user")}


def check_prompt_file(cfg: TaskConfig, family: str) -> list[str]:
    """A task's prompt files must be YAML mappings of template names to strings, holding the
    templates the stages render."""
    problems = []
    for key, path, builtin in [
            ("prompts", prompt_path(cfg, family), PROMPTS_DIR / "llm2llm" / f"{family}.yaml"),
            ("s3_prompts", s3_prompt_path(cfg, family), PROMPTS_DIR / "s3" / f"{family}.yaml")]:
        where = f"tasks.{cfg.name}.{key}: prompt file {str(path)!r}"
        if key == "s3_prompts" and not cfg.s3_prompts:
            continue  # the built-in one, or none for a type s3 does not run on
        if not path.is_file():
            problems.append(f"{where} does not exist")
            continue
        try:
            templates = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            problems.append(f"{where} is not valid YAML ({str(exc).splitlines()[0]})")
            continue
        if not isinstance(templates, dict) or not all(
                isinstance(v, str) for v in templates.values()):
            problems.append(f"{where} must map template names to strings (see {builtin})")
            continue
        missing = [name for name in REQUIRED_TEMPLATES[key] if name not in templates]
        if missing:
            problems.append(f"{where} lacks the template(s) {', '.join(missing)}; see {builtin}")
    return problems
