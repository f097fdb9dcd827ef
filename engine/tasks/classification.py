"""Text classification with a fixed label set, definable entirely in YAML."""

from __future__ import annotations

import re

from engine.errors import DataError
from engine.tasks.base import Parsed, Task

# The wrapper of an example: "Text:" as asked, or what small teachers write instead ("The
# text:", "Example 2:", "**New question 1:**"), at the start of a line, maybe numbered.
_TEXT = re.compile(r"(?:^|\n)\s*(?:\d+[.)]\s*)?(?:\*\*)?(?:the\s+|new\s+|another\s+)*"
                   r"(?:text|example|sentence|question|review)(?:\s*#?\d+)?\s*:(?:\*\*)?", re.I)
_ITEM = re.compile(r"(?:^|\n)\s*(?:\d+[.)]|[-*•])\s+")  # a bare numbered or bulleted list
_LABEL = re.compile(r"\n\s*(?:\*\*)?Label\s*:(?:\*\*)?\s*(.*)", re.I)
MIN_WORDS = 3  # shorter "examples" are fragments, not texts a classifier learns from
# The prompt parroted back, or talk about examples instead of one ("This is a similar
# example.", "The correct answer is ENTY"): seen from small teachers.
_ECHO = re.compile(r"correct (label|answer)|^text\s*:|\blabel\s*:|\bthe answer is\b|"
                   r"\bsimilar (example|text|question)|\bthis is an? (\w+ )?example\b|"
                   r"\bexample of an?\b|^please\b", re.I)
_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")


class ClassificationTask(Task):
    prompt_family = "classification"
    required_fields = ("text", "label")

    def check(self) -> list[str]:
        problems = super().check()
        where = f"tasks.{self.name}"
        if len(self.cfg.labels) < 2:
            problems.append(f"{where}.labels: a classification task needs at least 2 labels")
        unknown = sorted(set(self.cfg.label_names.values()) - set(self.cfg.labels))
        if unknown:
            problems.append(f"{where}.label_names: maps to {unknown}, which are not in labels")
        return problems

    @property
    def labels(self) -> list[str]:
        return self.cfg.labels

    @property
    def description(self) -> str:
        return self.cfg.description or f"Classify the text into one of {len(self.cfg.labels)} classes."

    def example(self, role_row: dict) -> tuple[str, str, str]:
        raw = str(role_row["label"])
        label = self.cfg.label_names.get(raw, raw)
        if label not in self.cfg.labels:
            raise DataError(f"task {self.name}: label {raw!r} is not one of {self.cfg.labels}; "
                            f"add it to `labels` or map it with `label_names`")
        return str(role_row["text"]).strip(), label, label

    def student_messages(self, text: str) -> list[dict]:
        content = self.prompts.render("student", description=self.description,
                                      labels=", ".join(self.cfg.labels), text=text)
        return [{"role": "user", "content": content}]

    def find_label(self, output: str) -> str:
        """The label mentioned earliest in the output (case-insensitive, whole word)."""
        best, best_pos = "", len(output) + 1
        for label in self.cfg.labels:
            match = re.search(rf"(?<![\w]){re.escape(label)}(?![\w])", output, re.I)
            if match and match.start() < best_pos:
                best, best_pos = label, match.start()
        return best

    def grade(self, output: str, label: str) -> tuple[str, bool]:
        got = self.find_label(output)
        return got, got == label

    def teacher_messages(self, row: dict, prediction: str, n: int,
                         demos: list[dict] = ()) -> list[dict]:
        """System prompt, then (with `demos`, other real rows of the same label) a worked
        request answered with real examples, then the request about `row`. The worked one
        shows a small teacher the format and that "similar" means a new text, not a copy."""
        if row["origin"] == "description":  # the zerogen strategy: no real row to show
            return self.description_messages(row, n)
        if row["origin"] in ("rationale", "validation"):  # the s3 strategy
            return self.s3_messages(row, prediction, n)
        labels = ", ".join(self.cfg.labels)
        system = self.prompts.render("teacher_system", description=self.description, labels=labels)
        messages = [{"role": "system", "content": system}]
        if len(demos) >= 2 and "teacher_answer" in self.prompts.templates:
            shown = demos[1: n + 1]
            messages += [
                {"role": "user", "content": self._ask(demos[0], len(shown), labels)},
                {"role": "assistant", "content": "\n".join(
                    self.prompts.render("teacher_answer", text=d["input"], label=d["label"])
                    for d in shown)}]
        messages.append({"role": "user", "content": self._ask(row, n, labels, prediction)})
        return messages

    def s3_messages(self, row: dict, prediction: str, n: int) -> list[dict]:
        """S3's requests: examples written on one rationale (*generate*, a target whose origin
        is "rationale" and whose input is the rationale), or like a real validation row the
        student got wrong (*error extrapolation*, origin "validation")."""
        values = dict(description=self.description, labels=", ".join(self.cfg.labels), n=n,
                      label=row["label"], text=row["input"], prediction=prediction or "nothing")
        template = "example_user" if row["origin"] == "rationale" else "extrapolate_user"
        prompts = self._s3()
        return [{"role": "system", "content": prompts.render("teacher_system", **values)},
                {"role": "user", "content": prompts.render(template, **values)}]

    def _ask(self, row: dict, n: int, labels: str, prediction: str = "") -> str:
        return self.prompts.render("teacher_user", text=row["input"], label=row["label"],
                                   prediction=prediction, n=n, labels=labels)

    def teacher_format_regex(self, row: dict, n: int, max_words: int = 60) -> str:
        top = max(MIN_WORDS, max_words) - 1
        words = rf"(?:[^\n ]+ ){{{MIN_WORDS - 1},{top}}}[^\n ]+"  # MIN_WORDS to max_words
        block = rf"Text: {words}\nLabel: {re.escape(row['label'])}\n"
        return f"({block}){{{n}}}"

    def parse_teacher(self, output: str, seed_row: dict) -> list[Parsed]:
        """`Text: ... / Label: ...` blocks (or another wrapper, or a bare numbered list);
        the label must be the seed row's label."""
        blocks = [b for b in _TEXT.split(output)[1:] if b.strip()]
        if not blocks:  # read leniently: a list of examples without the asked-for wrapper
            blocks = [b for b in _ITEM.split(output)[1:] if b.strip()]
        if not blocks:
            return [Parsed(input=output.strip()[:500],
                           reject_reason="unparsed: no 'Text:' block or list item")]
        return [self._parse_block(b, seed_row["label"]) for b in blocks]

    def _label_code_in(self, text: str) -> str:
        """A label that is a code, not a word ("ENTY", "SearchCreativeWork"), written in the
        text: real texts never contain it, a teacher that confuses text and label does."""
        for label in self.cfg.labels:
            if label != label.lower() and re.search(rf"(?<!\w){re.escape(label)}(?!\w)", text):
                return label
        return ""

    def _parse_block(self, block: str, want: str) -> Parsed:
        """The example is the first line after `Text:`: examples are one sentence, and small
        teachers tend to run on into echoes of the prompt."""
        match = _LABEL.search(block)
        lines = (block[: match.start()] if match else block).strip().splitlines()
        text = _NUMBERING.sub("", lines[0]).strip().strip('"') if lines else ""
        if len(text.split()) < MIN_WORDS:
            return Parsed(input=text, reject_reason="unparsed: text missing or too short")
        if _ECHO.search(text):
            return Parsed(input=text, reject_reason="prompt_echo")
        named = self._label_code_in(text)
        if named:
            return Parsed(input=text, reject_reason=f"label_names: mentions the label {named}")
        if match:
            said = self.find_label(match.group(1))
            if said != want:
                return Parsed(input=text, label=said, reject_reason="label_mismatch")
        return Parsed(input=text, target=want, label=want)
