"""Text classification with a fixed label set, definable entirely in YAML."""

from __future__ import annotations

import copy
import random
import re

from engine.errors import DataError
from engine.gates import label_names_reason, prompt_echo_reason, words_of
from engine.metrics import answer_mix
from engine.records import DESCRIPTION, RATIONALE
from engine.tasks.base import Parsed, PromptSet, Task

EXTRAPOLATE = "extrapolate_user"  # the template that makes a prompt file an S3 one

# The wrapper of an example: "Text:" as asked, or what small teachers write instead ("The
# text:", "Example 2:", "**New question 1:**"), at the start of a line, maybe numbered.
_TEXT = re.compile(r"(?:^|\n)\s*(?:\d+[.)]\s*)?(?:\*\*)?(?:the\s+|new\s+|another\s+)*"
                   r"(?:text|example|sentence|question|review)(?:\s*#?\d+)?\s*:(?:\*\*)?", re.I)
_ITEM = re.compile(r"(?:^|\n)\s*(?:\d+[.)]|[-*•])\s+")  # a bare numbered or bulleted list
_LABEL = re.compile(r"\n\s*(?:\*\*)?Label\s*:(?:\*\*)?\s*(.*)", re.I)
MIN_WORDS = 3  # shorter "examples" are fragments, not texts a classifier learns from
_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
# A wrapper inside the asked-for one ('Text: Sentence: "An object lesson ..."'): the example
# is what follows it. ("Text: Text: ..." stays an echo of the prompt: prompt_echo_reason.)
_INNER = re.compile(r"^(?:(?:the\s+|new\s+)?(?:example|sentence|question|review)"
                    r"(?:\s*#?\d+)?\s*:\s*)+", re.I)
_QUOTES = "\"'“”‘’"


class ClassificationTask(Task):
    """One text (or, with a `text_b` field, a sentence pair such as RTE's premise and
    hypothesis) and a label from a fixed set. A pair's `input` is both texts, each on its own
    line after its name ("Premise: ...\nHypothesis: ..."), so the student, the teacher and
    the quality gates all see the pair as one example."""

    prompt_family = "classification"
    # writing_second: the real first texts the teacher writes only second texts on (S3's NLI
    # synthesis); empty: it writes whole examples
    given_first: tuple[str, ...] = ()
    first_draw: str = ""  # which draw of given_first a view makes (see first_text_of)

    @property
    def labels_name_text(self) -> bool:
        """A single text's label names what it is (topic, sentiment, question type); a pair's
        (entailment) is a relation between its texts, which nearest rows do not show."""
        return "text_b" not in self.cfg.fields
    required_fields = ("text", "label")

    @classmethod
    def family_of(cls, cfg) -> str:
        return "pair" if "text_b" in cfg.fields else cls.prompt_family

    @property
    def names(self) -> list[str]:
        """The names of the texts of an example: one for a single text, two for a pair."""
        if "text_b" not in self.cfg.fields:
            return ["Text"]
        return list(self.cfg.text_names) if len(self.cfg.text_names) == 2 else ["Text", "Text B"]

    def render_values(self) -> dict:
        return {"first": self.names[0], "second": self.names[-1]}

    # -- a pair's second text written on a real first one (strategy.real_first_text) --------
    @property
    def is_pair(self) -> bool:
        return "text_b" in self.cfg.fields

    def pair_texts(self, text: str) -> tuple[str, str]:
        """(first, second) text of a pair's input ("{first}: ...\n{second}: ...")."""
        first, second = self.names
        a, sep, b = text.rpartition(f"\n{second}: ")
        return (a.removeprefix(f"{first}: "), b) if sep else (text, "")

    def first_text_pool(self) -> tuple[str, ...]:
        """The distinct first texts of the train rows that are not seed, validation or guard
        rows, less any a test, validation or guard row has: unlabelled premises, in file
        order."""
        if "_first_pool" not in self.__dict__:
            seed, test, validation, guard = self.splits()
            taken = {r["id"] for r in seed + validation + guard}
            held = {self.pair_texts(r["input"])[0] for r in test + validation + guard}
            pool: dict[str, None] = {}
            for row in self._as_examples(self.source_rows("train"), "train"):
                first = self.pair_texts(row["input"])[0]
                if row["id"] not in taken and first not in held:
                    pool.setdefault(first)
            self._first_pool = tuple(pool)
        return self._first_pool

    def writing_second(self, first_texts: tuple[str, ...], draw: str = "") -> "ClassificationTask":
        view = copy.copy(self)
        view.given_first, view.first_draw = tuple(first_texts), draw
        return view

    def first_text_of(self, row: dict) -> str:
        """The real first text a target's second texts are written on: a real row's own
        (an error's premise), else one of given_first chosen by the target's id and the
        view's draw (round and training seed), so each rationale or zerogen slot (and each
        repeat of it, `#k`) gets its own, every ask about it the same, and a slot's id
        reused in another round or seed another."""
        if row["origin"] in (RATIONALE, DESCRIPTION):
            key = f"{row['id']}@{self.first_draw}" if self.first_draw else row["id"]
            return random.Random(key).choice(self.given_first)
        return self.pair_texts(row["input"])[0]

    def description_messages(self, row: dict, n: int) -> list[dict]:
        """zerogen's request; writing second texts, on the slot's real first text
        (`zerogen_user_second`)."""
        if not self.given_first:
            return super().description_messages(row, n)
        values = dict(description=self.description, labels=", ".join(self.labels),
                      label=row["label"], n=n, first_text=self.first_text_of(row),
                      **self.render_values())
        return [{"role": "system", "content": self.prompts.render("teacher_system", **values)},
                {"role": "user", "content": self.prompts.render("zerogen_user_second",
                                                                **values)}]

    def gate_text(self, text: str) -> str:
        """Writing second texts only, the gates judge the second text: the first is a real
        one (which may be a validation row's, an error's premise), not the teacher's."""
        return self.pair_texts(text)[1] if self.given_first else text

    def check(self) -> list[str]:
        problems = super().check()
        where = f"tasks.{self.name}"
        if self.cfg.text_names and len(self.cfg.text_names) != len(self.names):
            problems.append(f"{where}.text_names: give {len(self.names)} name(s), one per text "
                            f"field (a pair task maps text and text_b)")
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
            raise DataError(f"label {raw!r} is not one of {self.cfg.labels}; "
                            f"add it to `labels` or map it with `label_names`")
        text = str(role_row["text"]).strip()
        if not text:
            raise DataError(f"its text ({self.cfg.fields['text']!r}) is empty; fill it in or "
                            f"remove the row")
        if "text_b" in self.cfg.fields:
            first, second = self.names
            text_b = str(role_row["text_b"]).strip()
            if not text_b:
                raise DataError(f"its second text ({self.cfg.fields['text_b']!r}) is empty; "
                                f"fill it in or remove the row")
            text = f"{first}: {text}\n{second}: {text_b}"
        return text, label, label

    def student_messages(self, text: str) -> list[dict]:
        content = self.prompts.render("student", description=self.description,
                                      labels=", ".join(self.cfg.labels), text=text,
                                      **self.render_values())
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

    def round_scores(self, predictions) -> dict:
        """The test answers' label mix (engine/metrics.answer_mix): whether the student
        answers one label."""
        return answer_mix(predictions)

    def teacher_messages(self, row: dict, prediction: str, n: int, demos: list[dict] = (),
                         prompts: PromptSet | None = None) -> list[dict]:
        """System prompt, then (with `demos`, other real rows of the same label) a worked
        request answered with real examples, then the request about `row`. The worked one
        shows a small teacher the format and that "similar" means a new text, not a copy:
        without it the bundled 135M teacher wrote the shown text back for most requests.
        `prompts`: the strategy's prompt set (default: the task's own file)."""
        prompts = prompts or self.prompts
        if row["origin"] == DESCRIPTION:  # no real row to show
            return self.description_messages(row, n)
        if EXTRAPOLATE in prompts.templates or row["origin"] == RATIONALE:  # an S3 prompt file
            return self.s3_messages(row, prediction, n, demos,
                                    prompts if EXTRAPOLATE in prompts.templates else None)
        return self._with_worked_example(prompts, "teacher_user", row, prediction, n, demos)

    def s3_messages(self, row: dict, prediction: str, n: int, demos: list[dict] = (),
                    prompts: PromptSet | None = None) -> list[dict]:
        """S3's requests: examples written on one rationale (*generate*, a target whose origin
        is RATIONALE and whose input is the rationale), or like a real row the student got
        wrong (*error extrapolation*, with a worked example from `demos` as above)."""
        prompts = prompts or self._s3()
        if self.given_first:
            # no worked example: its answers would be second texts of other first texts
            values = {**self._values(prompts, row, prediction, n),
                      "first_text": self.first_text_of(row)}
            template = "example_user_second" if row["origin"] == RATIONALE \
                else "extrapolate_user_second"
            return [{"role": "system", "content": prompts.render("teacher_system", **values)},
                    {"role": "user", "content": prompts.render(template, **values)}]
        if row["origin"] == RATIONALE:
            values = self._values(prompts, row, prediction, n)
            return [{"role": "system", "content": prompts.render("teacher_system", **values)},
                    {"role": "user", "content": prompts.render("example_user", **values)}]
        return self._with_worked_example(prompts, EXTRAPOLATE, row, prediction, n, demos)

    def _with_worked_example(self, prompts: PromptSet, template: str, row: dict,
                             prediction: str, n: int, demos: list[dict]) -> list[dict]:
        """System prompt, a worked request about demos[0] answered with demos[1:n+1] in the
        file's `teacher_answer` blocks (where it has that template and there are 2 demos),
        then the request about `row`. The worked request shows the same wrong answer: for a
        row of the same label it is as plausible a mistake."""
        values = self._values(prompts, row, prediction, n)
        messages = [{"role": "system", "content": prompts.render("teacher_system", **values)}]
        if len(demos) >= 2 and "teacher_answer" in prompts.templates:
            shown = demos[1: n + 1]
            worked = self._values(prompts, demos[0], prediction, len(shown))
            messages += [
                {"role": "user", "content": prompts.render(template, **worked)},
                {"role": "assistant", "content": "\n".join(
                    prompts.render("teacher_answer", **self._values(prompts, d, "", 1))
                    for d in shown)}]
        messages.append({"role": "user", "content": prompts.render(template, **values)})
        return messages

    def _values(self, prompts: PromptSet, row: dict, prediction: str, n: int) -> dict:
        """Everything a classification prompt may name (unused values are ignored)."""
        nothing = "nothing" if prompts is self.s3_prompts else ""
        return dict(description=self.description, labels=", ".join(self.cfg.labels), n=n,
                    label=row["label"], text=row["input"], prediction=prediction or nothing,
                    **self.render_values())

    def teacher_format_regex(self, row: dict, n: int, max_words: int = 60) -> str:
        top = max(MIN_WORDS, max_words) - 1
        words = rf"(?:[^\n ]+ ){{{MIN_WORDS - 1},{top}}}[^\n ]+"  # MIN_WORDS to max_words
        if self.given_first:
            block = rf"{re.escape(self.names[1])}: {words}\nLabel: {re.escape(row['label'])}\n"
        elif "text_b" in self.cfg.fields:
            first, second = (re.escape(name) for name in self.names)
            block = rf"{first}: {words}\n{second}: {words}\nLabel: {re.escape(row['label'])}\n"
        else:
            block = rf"Text: {words}\nLabel: {re.escape(row['label'])}\n"
        return f"({block}){{{n}}}"

    def parse_teacher(self, output: str, seed_row: dict) -> list[Parsed]:
        """`Text: ... / Label: ...` blocks (or another wrapper, or a bare numbered list);
        a pair's blocks start with its first text's name. The label must be the seed row's."""
        if self.given_first:
            return self._parse_seconds(output, seed_row)
        if "text_b" in self.cfg.fields:
            return self._parse_pairs(output, seed_row["label"])
        blocks = [b for b in _TEXT.split(output)[1:] if b.strip()]
        if not blocks:  # read leniently: a list of examples without the asked-for wrapper
            blocks = [b for b in _ITEM.split(output)[1:] if b.strip()]
        if not blocks:
            return [Parsed(input=output.strip()[:500],
                           reject_reason="unparsed: no 'Text:' block or list item")]
        return [self._parse_block(b, seed_row["label"]) for b in blocks]

    def _parse_block(self, block: str, want: str) -> Parsed:
        """The example is the first line after `Text:` (every line up to `Label:` for a
        multiline task): small teachers tend to run on into echoes of the prompt."""
        match = _LABEL.search(block)
        text = self._text_of(block[: match.start()] if match else block)
        return self._checked([text], text, match.group(1) if match else None, want)

    def _text_of(self, part: str) -> str:
        lines = [line.strip() for line in part.strip().splitlines() if line.strip()]
        if not lines:
            return ""
        kept = lines if self.cfg.multiline else lines[:1]
        text = _INNER.sub("", _NUMBERING.sub("", " ".join(kept)).strip())
        # quotes around the example, balanced or not ('"An object lesson in ...')
        return text.strip().strip(_QUOTES).strip()

    def _parse_pairs(self, output: str, want: str) -> list[Parsed]:
        first, second = (re.escape(name) for name in self.names)
        starts = re.compile(rf"(?:^|\n)\s*(?:\d+[.)]\s*)?(?:\*\*)?{first}\s*:(?:\*\*)?", re.I)
        seconds = re.compile(rf"\n\s*(?:\*\*)?{second}\s*:(?:\*\*)?", re.I)
        blocks = [b for b in starts.split(output)[1:] if b.strip()]
        if not blocks:
            return [Parsed(input=output.strip()[:500],
                           reject_reason=f"unparsed: no '{self.names[0]}:' block")]
        out = []
        for block in blocks:
            split = seconds.search(block)
            if not split:
                out.append(Parsed(input=block.strip()[:500],
                                  reject_reason=f"unparsed: no '{self.names[1]}:' line"))
                continue
            rest = block[split.end():]
            match = _LABEL.search(rest)
            a = self._text_of(block[: split.start()])
            b = self._text_of(rest[: match.start()] if match else rest)
            text = f"{self.names[0]}: {a}\n{self.names[1]}: {b}"
            out.append(self._checked([a, b], text, match.group(1) if match else None, want))
        return out

    def _parse_seconds(self, output: str, seed_row: dict) -> list[Parsed]:
        """`{second}: ... / Label: ...` blocks, each made a pair with the target's real
        first text (first_text_of)."""
        first, second = self.names
        starts = re.compile(rf"(?:^|\n)\s*(?:\d+[.)]\s*)?(?:\*\*)?{re.escape(second)}\s*:"
                            rf"(?:\*\*)?", re.I)
        blocks = [b for b in starts.split(output)[1:] if b.strip()]
        if not blocks:
            return [Parsed(input=output.strip()[:500],
                           reject_reason=f"unparsed: no '{second}:' block")]
        given = self.first_text_of(seed_row)
        out = []
        for block in blocks:
            match = _LABEL.search(block)
            written = self._text_of(block[: match.start()] if match else block)
            text = f"{first}: {given}\n{second}: {written}"
            if words_of(written) == words_of(given):  # the gates, judging the hypothesis, miss it
                out.append(Parsed(input=text, reject_reason=f"prompt_echo: the {second} "
                                                            f"repeats the {first}"))
                continue
            out.append(self._checked([written], text, match.group(1) if match else None,
                                     seed_row["label"], written))
        return out

    def _checked(self, parts: list[str], text: str, said: str | None, want: str,
                 written: str = "") -> Parsed:
        """An example whose every text is long enough, not an echo of the prompt, free of
        label codes (in what was written, where only part was: `written`), and labelled as
        asked."""
        if any(len(p.split()) < MIN_WORDS for p in parts):
            return Parsed(input=text, reject_reason="unparsed: text missing or too short")
        # the gates' rules in their parser variants: one phrase or one label code is enough
        echo = next(filter(None, (prompt_echo_reason(p, any_echo_phrase=True) for p in parts)), "")
        reason = echo or label_names_reason(written or text, self.cfg.labels,
                                            any_code_mention=True)
        if reason:
            return Parsed(input=text, reject_reason=reason)
        if said is not None and self.find_label(said) != want:
            return Parsed(input=text, label=self.find_label(said), reject_reason="label_mismatch")
        return Parsed(input=text, target=want, label=want)
