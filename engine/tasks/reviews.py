"""A built-in sentiment task: one-sentence movie reviews, generated from a seed.

It lets the demo train the encoder student with no data files. A review is `negative` or
`positive`, and most of them are not read off one word: a negated word ("not dull at all" is
positive), a contrast whose last clause decides ("the plot was dull, but the acting was
superb"), an expectation met or not ("I expected the plot to be gripping, but it never was").
A student trained on a few rows of each label learns the plain ones and misses the rest: the
errors a teacher's aimed rows are for. Seed, validation and test rows are carved from one
pool of distinct reviews (a task with one split), so no test text is a seed text.
"""

from __future__ import annotations

import random

from engine.tasks.classification import ClassificationTask

LABELS = ["negative", "positive"]
POSITIVE = ["great", "wonderful", "moving", "clever", "gripping", "charming", "brilliant",
            "funny", "beautiful", "thrilling", "touching", "superb", "delightful", "sharp",
            "warm", "fresh", "stunning", "memorable"]
NEGATIVE = ["dull", "boring", "clumsy", "tedious", "awful", "flat", "lifeless", "predictable",
            "messy", "shallow", "forgettable", "painful", "silly", "bland", "weak", "stale",
            "confusing", "lazy"]
ASPECTS = ["the acting", "the plot", "the script", "the ending", "the soundtrack", "the pacing",
           "the dialogue", "the cast", "the story", "the direction", "the cinematography",
           "the humor", "the lead performance", "the final act", "the camera work", "the editing"]
POOL_SIZE = 2000


def _words(label: str, same: bool = True) -> list[str]:
    """The adjectives of `label` (same) or of the other label."""
    return POSITIVE if (label == "positive") == same else NEGATIVE


def _plain(r: random.Random, label: str) -> str:
    return f"{r.choice(ASPECTS)} was {r.choice(_words(label))}."


def _negated(r: random.Random, label: str) -> str:  # "not dull at all" reads positive
    return f"{r.choice(ASPECTS)} was not {r.choice(_words(label, same=False))} at all."


def _contrast(r: random.Random, label: str) -> str:  # the clause after "but" decides
    first, last = r.sample(ASPECTS, 2)
    return (f"{first} was {r.choice(_words(label, same=False))}, but {last} was "
            f"{r.choice(_words(label))}.")


def _expectation(r: random.Random, label: str) -> str:  # met or not: the ending decides
    ending = "and it truly was" if label == "positive" else "but it never was"
    return f"I expected {r.choice(ASPECTS)} to be {r.choice(POSITIVE)}, {ending}."


KINDS = [_plain, _negated, _contrast, _expectation]


def generate(n: int, seed: int) -> list[dict]:
    """Up to n distinct reviews as {"text", "label"} dicts, identical for the same (n, seed)."""
    r = random.Random(seed)
    rows, seen = [], set()
    for _ in range(n * 4):  # the templates repeat themselves now and then: skip repeats
        label = r.choice(LABELS)
        text = r.choice(KINDS)(r, label)
        text = text[0].upper() + text[1:]
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
            if len(rows) == n:
                break
    return rows


class ReviewsTask(ClassificationTask):
    """The `reviews` preset: a classification task whose rows are generated, not read."""

    def check(self) -> list[str]:
        """Generated rows: no files to read, and the labels and fields are the generator's, so
        a config that sets them otherwise would fail (or be ignored) only when rows are read."""
        where, problems = f"tasks.{self.name}", []
        if list(self.cfg.labels) != LABELS:
            problems.append(f"{where}.labels: a reviews task's labels are {LABELS}; leave "
                            f"labels unset")
        if dict(self.cfg.fields) != {"text": "text", "label": "label"}:
            problems.append(f"{where}.fields: a reviews task's rows have the fields text and "
                            f"label; leave fields unset")
        data = {k: v for k, v in self.cfg.data.model_dump().items() if v}
        if data:
            problems.append(f"{where}.data: a reviews task generates its rows, it reads no "
                            f"files ({', '.join(sorted(data))} set); remove data, or use "
                            f"type: classification to read your own")
        return problems

    def source_rows(self, split: str) -> list[dict]:
        return generate(POOL_SIZE, seed=self.seed)  # the one pool every split is carved from
