"""Multiple choice (the LLM2LLM paper's CaseHOLD: a context and 5 candidate holdings): a
context, K candidate answers, and the right one's letter.

An example's input is the context, then one line per choice ("A. ...", "B. ..."); its label is
the letter. The data's `label` may be the choice's index (0-based), its letter or its text.
The teacher writes whole new items in the same shape; one with another number of choices, a
repeated choice or an answer letter out of range is rejected.
"""

from __future__ import annotations

import re
import string

from engine.errors import DataError
from engine.metrics import answer_mix
from engine.tasks.base import Parsed, PromptSet, Task

LETTERS = string.ascii_uppercase
_ITEM = re.compile(r"(?:^|\n)\s*(?:\d+[.)]\s*)?(?:\*\*)?(?:context|question)\s*:(?:\*\*)?", re.I)
_CHOICE = re.compile(r"^\s*\(?([A-Z])[.):]\s+(.+)$")
_ANSWER = re.compile(r"^\s*(?:\*\*)?(?:correct\s+)?answer\s*:(?:\*\*)?\s*\(?([A-Z])\b", re.I)
MIN_WORDS = 3


class MultipleChoiceTask(Task):
    prompt_family = "multiple_choice"
    required_fields = ("context", "choices", "label")

    def example(self, role_row: dict) -> tuple[str, str, str]:
        choices = [str(c).strip() for c in role_row["choices"]]
        if not 2 <= len(choices) <= len(LETTERS):
            raise DataError(f"task {self.name}: a row has {len(choices)} choices; give 2 to "
                            f"{len(LETTERS)} in the `choices` field (a list)")
        letter = self._letter(role_row["label"], choices)
        lines = [str(role_row["context"]).strip()]
        lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
        return "\n".join(lines), letter, letter

    def _letter(self, raw, choices: list[str]) -> str:
        """The right choice's letter from an index, a letter or the choice's text."""
        text = str(raw).strip()
        if text.isdigit() and int(text) < len(choices):
            return LETTERS[int(text)]
        if len(text) == 1 and text.upper() in LETTERS[: len(choices)]:
            return text.upper()
        if text in choices:
            return LETTERS[choices.index(text)]
        raise DataError(f"task {self.name}: label {raw!r} is neither an index, a letter nor "
                        f"the text of one of the row's {len(choices)} choices")

    def student_messages(self, text: str) -> list[dict]:
        return [{"role": "user", "content": self.prompts.render(
            "student", description=self.description, item=text)}]

    @staticmethod
    def n_choices(text: str) -> int:
        return sum(bool(_CHOICE.match(line)) for line in text.splitlines()[1:])

    def grade(self, output: str, label: str) -> tuple[str, bool]:
        """The first standalone letter of the output ("B", "(B)", "Answer: B.")."""
        match = re.search(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])", output)
        got = match.group(1) if match else ""
        return got, got == label

    def round_scores(self, predictions) -> dict:
        """The test answers' letter mix: whether the student answers one letter."""
        return answer_mix(predictions)

    def teacher_messages(self, row: dict, prediction: str, n: int, demos: list[dict] = (),
                         prompts: PromptSet | None = None) -> list[dict]:
        prompts = prompts or self.prompts
        system = prompts.render("teacher_system", description=self.description)
        user = prompts.render("teacher_user", item=row["input"], answer=row["label"],
                                   prediction=prediction, n=n,
                                   k=self.n_choices(row["input"]),
                                   last=LETTERS[self.n_choices(row["input"]) - 1])
        return self._chat(system, user)

    def teacher_format_regex(self, row: dict, n: int, max_words: int = 60) -> str:
        k = self.n_choices(row["input"])
        choices = "".join(rf"{LETTERS[i]}\. [^\n]{{3,300}}\n" for i in range(k))
        block = rf"Context: [^\n]{{20,2000}}\n{choices}Answer: [A-{LETTERS[k - 1]}]\n"
        return f"({block}){{{n}}}"

    def parse_teacher(self, output: str, seed_row: dict) -> list[Parsed]:
        """`Context:` blocks, each with as many lettered choices as the seed row and an
        `Answer:` letter among them."""
        k = self.n_choices(seed_row["input"])
        blocks = [b for b in _ITEM.split(output)[1:] if b.strip()]
        if not blocks:
            return [Parsed(input=output.strip()[:500],
                           reject_reason="unparsed: no 'Context:' block")]
        return [self._parse_block(b, k) for b in blocks]

    @staticmethod
    def _parse_block(block: str, k: int) -> Parsed:
        lines = [line for line in block.strip().splitlines() if line.strip()]
        context = lines[0].strip() if lines else ""
        choices, answer = [], ""
        for line in lines[1:]:
            if (m := _ANSWER.match(line)):
                answer = m.group(1).upper()
                break
            if (m := _CHOICE.match(line)):
                choices.append((m.group(1), m.group(2).strip()))
        text = "\n".join([context] + [f"{LETTERS[i]}. {c}" for i, (_, c) in enumerate(choices)])
        if len(context.split()) < MIN_WORDS:
            return Parsed(input=text, reject_reason="unparsed: context missing or too short")
        if len(choices) != k or [letter for letter, _ in choices] != list(LETTERS[:k]):
            return Parsed(input=text, reject_reason=f"unparsed: {len(choices)} choices lettered "
                                                     f"{''.join(x for x, _ in choices)}; want "
                                                     f"{LETTERS[:k]}")
        texts = [c.lower() for _, c in choices]
        if len(set(texts)) < k:
            return Parsed(input=text, reject_reason="unverified: two choices are the same")
        if not answer or answer not in LETTERS[:k]:
            return Parsed(input=text, reject_reason=f"unparsed: no answer letter A-{LETTERS[k - 1]}")
        return Parsed(input=text, target=answer, label=answer)
