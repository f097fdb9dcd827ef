"""Extractive question answering (SQuAD-style: AdversarialQA): a context, a question, and an
answer that is a span of the context. A causal student answers generatively; it is graded by
exact match after SQuAD's normalization, and F1 over answer tokens is reported beside it.

An example's input is "Context: ...\\nQuestion: ...". The teacher writes new questions about
the same context; the quality gates judge the question it wrote, not the context it was given
(`gate_text`), and an answer that is not a span of the context is rejected.
"""

from __future__ import annotations

import re
import string
from collections import Counter

import pyarrow as pa

from engine.tasks.base import Parsed, PromptSet, Task

_QUESTION = re.compile(r"(?:^|\n)\s*(?:\d+[.)]\s*)?(?:\*\*)?(?:new\s+)?question(?:\s*\d+)?\s*:"
                       r"(?:\*\*)?", re.I)
_ANSWER = re.compile(r"\n\s*(?:\*\*)?answer\s*:(?:\*\*)?\s*", re.I)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
GOLD_SEPARATOR = "\n"  # a row's label holds every gold answer, one per line
MIN_WORDS = 3


def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: list[str]) -> bool:
    return any(normalize_answer(prediction) == normalize_answer(g) for g in golds)


def f1_score(prediction: str, golds: list[str]) -> float:
    """The best token-overlap F1 of the prediction against any gold answer."""
    best = 0.0
    pred = normalize_answer(prediction).split()
    for gold in golds:
        ref = normalize_answer(gold).split()
        if not pred or not ref:
            best = max(best, float(pred == ref))
            continue
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def split_input(text: str) -> tuple[str, str]:
    """(context, question) of an example's input."""
    context, _, question = text.rpartition("\nQuestion: ")
    return context.removeprefix("Context: "), question


class QATask(Task):
    prompt_family = "qa"
    required_fields = ("context", "question", "answers")

    def example(self, role_row: dict) -> tuple[str, str, str]:
        answers = role_row["answers"]
        if isinstance(answers, dict):  # SQuAD style: {"text": [...], "answer_start": [...]}
            answers = answers.get("text", [])
        golds = [str(a).strip() for a in ([answers] if isinstance(answers, str) else answers)]
        golds = list(dict.fromkeys(g for g in golds if g))
        text = f"Context: {str(role_row['context']).strip()}\nQuestion: " \
               f"{str(role_row['question']).strip()}"
        return text, golds[0] if golds else "", GOLD_SEPARATOR.join(golds)

    def student_messages(self, text: str) -> list[dict]:
        context, question = split_input(text)
        return [{"role": "user", "content": self.prompts.render(
            "student", description=self.description, context=context, question=question)}]

    @staticmethod
    def answer_of(output: str) -> str:
        """The student's answer: its first line, without an "Answer:" prefix or quotes."""
        lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
        first = lines[0] if lines else ""
        first = re.sub(r"^(?:the\s+)?answer\s*(?:is)?\s*:?\s*", "", first, flags=re.I)
        return first.strip().strip('"').rstrip(".").strip()

    def grade(self, output: str, label: str) -> tuple[str, bool]:
        got = self.answer_of(output)
        return got, bool(got) and exact_match(got, label.split(GOLD_SEPARATOR))

    def round_scores(self, predictions: pa.Table) -> dict:
        """Mean F1 per split (test_f1, train_f1): partial credit beside exact match."""
        out = {}
        for split in ("train", "test"):
            rows = [p for p in predictions.to_pylist() if p["split"] == split]
            if rows:
                out[f"{split}_f1"] = sum(
                    f1_score(p["extracted"], p["label"].split(GOLD_SEPARATOR))
                    for p in rows) / len(rows)
        return out

    def gate_text(self, text: str) -> str:
        return split_input(text)[1]

    def teacher_messages(self, row: dict, prediction: str, n: int, demos: list[dict] = (),
                         prompts: PromptSet | None = None) -> list[dict]:
        prompts = prompts or self.prompts
        context, question = split_input(row["input"])
        system = prompts.render("teacher_system", description=self.description)
        user = prompts.render("teacher_user", context=context, question=question,
                                   answer=row["target"], prediction=prediction, n=n)
        return self._chat(system, user)

    def teacher_format_regex(self, row: dict, n: int, max_words: int = 60) -> str:
        block = r"Question: [^\n]{10,300}\?\nAnswer: [^\n]{1,120}\n"
        return f"({block}){{{n}}}"

    def parse_teacher(self, output: str, seed_row: dict) -> list[Parsed]:
        """Question/Answer blocks about the seed row's context; the answer must be a span of
        the context (extractive QA), the question a real one."""
        context, _ = split_input(seed_row["input"])
        blocks = [b for b in _QUESTION.split(output)[1:] if b.strip()]
        if not blocks:
            return [Parsed(input=output.strip()[:500],
                           reject_reason="unparsed: no 'Question:' block")]
        return [self._parse_block(b, context) for b in blocks]

    @staticmethod
    def _parse_block(block: str, context: str) -> Parsed:
        parts = _ANSWER.split(block, maxsplit=1)
        question = parts[0].strip().splitlines()[0].strip() if parts[0].strip() else ""
        text = f"Context: {context}\nQuestion: {question}"
        if len(parts) != 2 or not parts[1].strip():
            return Parsed(input=text, reject_reason="unparsed: no 'Answer:'")
        answer = QATask.answer_of(parts[1])
        if len(question.split()) < MIN_WORDS:
            return Parsed(input=text, reject_reason="unparsed: question missing or too short")
        if not answer or f" {normalize_answer(answer)} " not in f" {normalize_answer(context)} ":
            return Parsed(input=text, target=answer, label=answer,
                          reject_reason="unverified: the answer is not a span of the context")
        return Parsed(input=text, target=answer, label=answer)
