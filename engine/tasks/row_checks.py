"""Checks of the rows a run will use, before any work: duplicated texts, one text with two
labels, test rows that are also training rows, and rows too long to be examples.

What is harmless in small numbers is a warning with counts (real data sets have a few:
SST-2's train holds 371 repeated sentences and 5 with both labels; TREC's test shares 11
questions with its train); past a threshold it is an error, since then the data is more
likely broken (a file given twice, a label column shifted) than noisy.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

# past these shares the rows are refused, not warned about
MAX_DUPLICATE_SHARE = 0.25  # of the seed rows: repeats of a text already in the seed
MAX_CONFLICT_SHARE = 0.10  # of the seed's texts: given two or more labels
MAX_TEST_OVERLAP_SHARE = 0.10  # of the seed (or validation) rows: also test rows
# a row longer than this many times what the student reads is not an example (a 10 MB line)
OVERLONG_FACTOR = 50
CHARS_PER_TOKEN = 4  # rough, for English text; only for the size checks above


def normal(text: str) -> str:
    """A text as compared here: case and runs of whitespace do not make it another text."""
    return re.sub(r"\s+", " ", text).strip().lower()


def where(row: dict, sources: dict[str, str]) -> str:
    """'<file> row N' of a row, from its id '<task>:<split>:<index in the file>'."""
    _, split, index = row["id"].rsplit(":", 2)
    return f"{sources.get(split) or split} row {int(index) + 1}"


def not_in_training(test: list[dict], trained: list[dict]) -> tuple[list[dict], list[dict]]:
    """(test rows whose text no training row has, the test rows that are training rows)."""
    seen = {normal(r["input"]) for r in trained}
    kept, shared = [], []
    for row in test:
        (shared if normal(row["input"]) in seen else kept).append(row)
    return kept, shared


def row_problems(task: str, seed: list[dict], validation: list[dict], test: list[dict],
                 shared: list[dict], max_seq_len: int, sources: dict[str, str],
                 guard: list[dict] = ()) -> tuple[list[str], list[str]]:
    """(problems, warnings) of a task's rows. `shared`: the test rows left out because a
    seed, validation or guard row has their text (Task.splits)."""
    problems, warnings = [], []
    name = f"tasks.{task}"
    texts = Counter(normal(r["input"]) for r in seed)
    repeats = sum(n - 1 for n in texts.values())
    if repeats:
        top, n = texts.most_common(1)[0]
        message = (f"{name}: {repeats} of the {len(seed)} seed rows repeat a text already in it "
                   f"(the most: {n} times, {top[:60]!r})")
        if repeats > MAX_DUPLICATE_SHARE * len(seed):
            problems.append(f"{message}; remove the repeats from {sources.get('train')}")
        else:
            warnings.append(f"{message}; they weigh more in training")
    labels: dict[str, set] = defaultdict(set)
    for row in seed + validation:
        labels[normal(row["input"])].add(row["label"])
    conflicts = [text for text, seen in labels.items() if len(seen) > 1]
    if conflicts:
        example = conflicts[0]
        message = (f"{name}: {len(conflicts)} text(s) of the seed and validation rows have two "
                   f"or more labels (e.g. {example[:60]!r}: {sorted(labels[example])})")
        if len(conflicts) > MAX_CONFLICT_SHARE * max(len(texts), 1):
            problems.append(f"{message}; check the label column ({sources.get('train')})")
        else:
            warnings.append(f"{message}; a student cannot get both right")
    if shared:
        held = "seed, validation or guard" if guard else "seed or validation"
        message = (f"{name}: {len(shared)} test row(s) have the text of a {held} row "
                   f"({', '.join(where(r, sources) for r in shared[:3])})")
        trained = len(seed) + len(validation) + len(guard)
        if len(shared) > MAX_TEST_OVERLAP_SHARE * max(trained, 1):
            problems.append(f"{message}: a student tested on what it trained on scores too "
                            f"high; give a test file that does not share rows with train")
        else:
            warnings.append(f"{message}: left out of the test set")
    reads = max_seq_len * CHARS_PER_TOKEN
    for row in [*seed, *validation, *guard, *test]:
        if len(row["input"]) > OVERLONG_FACTOR * reads:
            problems.append(f"{name}: {where(row, sources)} is {len(row['input']):,} characters, "
                            f"{OVERLONG_FACTOR}x more than the student reads (train.max_seq_len "
                            f"{max_seq_len} tokens); remove it or split it into examples")
            break
    cut = sum(len(r["input"]) > reads for r in seed)
    if cut and not problems:
        warnings.append(f"{name}: {cut} of the {len(seed)} seed rows are longer than the "
                        f"student reads (train.max_seq_len {max_seq_len} tokens, about {reads} "
                        f"characters): their ends are cut; raise max_seq_len to keep them")
    return problems, warnings
