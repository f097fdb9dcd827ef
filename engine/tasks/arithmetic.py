"""A built-in arithmetic word-problem task in GSM8K format, generated from a seed.

It lets the demo run with no data files. Problems are two-step templates with random names,
items and numbers; train and test come from separate random streams.
"""

from __future__ import annotations

import random

from engine.tasks.math import MathTask

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jonas",
         "Kemi", "Liam", "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tara"]
ITEMS = ["apples", "stickers", "marbles", "books", "pencils", "cookies", "shells", "cards",
         "coins", "stamps", "eggs", "balloons"]
POOL_SIZES = {"train": 2000, "test": 500}


def _buy_and_give(r: random.Random, name: str, item: str) -> tuple[str, str]:
    a, b = r.randint(5, 60), r.randint(2, 40)
    c = r.randint(1, a + b - 1)
    q = f"{name} has {a} {item}. {name} buys {b} more and then gives {c} to a friend. How many {item} does {name} have now?"
    s = f"After buying, {name} has {a} + {b} = {a + b} {item}.\nAfter giving some away, {name} has {a + b} - {c} = {a + b - c} {item}."
    return q, f"{s}\n#### {a + b - c}"


def _boxes(r: random.Random, name: str, item: str) -> tuple[str, str]:
    a, b, c = r.randint(2, 12), r.randint(2, 15), r.randint(1, 30)
    q = f"{name} buys {a} boxes of {item} with {b} {item} in each box, and already had {c} {item}. How many {item} does {name} have in total?"
    s = f"The boxes hold {a} * {b} = {a * b} {item}.\nIn total {name} has {a * b} + {c} = {a * b + c} {item}."
    return q, f"{s}\n#### {a * b + c}"


def _share(r: random.Random, name: str, item: str) -> tuple[str, str]:
    k, each, extra = r.randint(2, 9), r.randint(2, 20), r.randint(1, 15)
    q = f"{name} has {k * each + extra} {item}. {name} keeps {extra} and shares the rest equally among {k} friends. How many {item} does each friend get?"
    s = f"{name} shares {k * each + extra} - {extra} = {k * each} {item}.\nEach friend gets {k * each} / {k} = {each} {item}."
    return q, f"{s}\n#### {each}"


def _price(r: random.Random, name: str, item: str) -> tuple[str, str]:
    n, price, paid_extra = r.randint(2, 12), r.randint(2, 15), r.randint(1, 50)
    cost = n * price
    q = f"{item.capitalize()} cost ${price} each. {name} buys {n} of them and pays with ${cost + paid_extra}. How much change does {name} get?"
    s = f"{n} {item} cost {n} * {price} = ${cost}.\nThe change is {cost + paid_extra} - {cost} = ${paid_extra}."
    return q, f"{s}\n#### {paid_extra}"


TEMPLATES = [_buy_and_give, _boxes, _share, _price]


def generate(n: int, seed: int) -> list[dict]:
    """n problems as {"question", "answer"} dicts, identical for the same (n, seed)."""
    r = random.Random(seed)
    rows = []
    for _ in range(n):
        template = r.choice(TEMPLATES)
        question, answer = template(r, r.choice(NAMES), r.choice(ITEMS))
        rows.append({"question": question, "answer": answer})
    return rows


class ArithmeticTask(MathTask):
    prompt_family = "math"  # same prompts, grader and parser as GSM8K

    def check(self) -> list[str]:
        return []  # generated: no files to check

    def source_rows(self, split: str) -> list[dict]:
        stream = {"train": 0, "test": 1}[split]
        return generate(POOL_SIZES[split], seed=self.seed * 1000 + stream)
