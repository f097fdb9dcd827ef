"""Near-duplicate filtering at scale: `NearDuplicateIndex.check_and_add_many` over 1M short rows.

    python -m benchmarks.near_dup --rows 1000000 --json results/near_dup.json

Rows are 8-20 words, synthesized deterministically: half open with the first 3 words of a real
TREC question or SST-2 phrase (real data shares prefixes like "What is the", which crowds LSH
buckets), the rest are words drawn by their frequency in those files (a built-in word list when
../shared/data is absent). 5% are planted near duplicates: a copy of an earlier row with one
word replaced. Reported: recall on the planted rows (all of them, and those whose exact shingle
Jaccard reaches the threshold, i.e. what the index promises to catch), the false-positive rate
(unplanted rows flagged although their exact Jaccard with the match is under the threshold),
and, as a baseline in the same run over the same rows, an exact-duplicate filter (a Python set
of normalized texts) with the time ratio against it: wall-clock and, as the machine may be
shared, process CPU time too (both sides are single-threaded).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from collections import Counter
from pathlib import Path

from benchmarks import report
from engine.gates import NearDuplicateIndex, normalize, words_of

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FALLBACK_WORDS = """what is the of a an in to and how many who where when which was did does
name city country year first world people movie film story good bad great time make long
president war river capital largest called much music song book water state new old famous
american english french team game love life man woman character director plot scene""".split()


def vocabulary() -> tuple[list[str], list[int], list[list[str]]]:
    """(words, their counts, 3-word openings) from TREC and SST-2, else the fallback list."""
    texts = []
    for path, field in [(DATA / "trec" / "train.jsonl", "text"),
                        (DATA / "sst2" / "train.jsonl", "sentence")]:
        if path.is_file():
            texts += [json.loads(line)[field] for line in path.open()]
    counts = Counter(w for t in texts for w in words_of(t))
    if not counts:
        return FALLBACK_WORDS, [1] * len(FALLBACK_WORDS), [FALLBACK_WORDS[:3]]
    openings = [w[:3] for w in map(words_of, texts) if len(w) >= 3]
    words = sorted(counts)
    return words, [counts[w] for w in words], openings


def synthesize(n: int, seed: int, planted_share: float = 0.05) -> tuple[list[str], list[int]]:
    """(rows, source row of each planted near duplicate or -1)."""
    rng = random.Random(seed)
    words, weights, openings = vocabulary()
    cum = list(_accumulate(weights))
    rows, source = [], []
    for i in range(n):
        if i > 100 and rng.random() < planted_share:
            j = rng.randrange(i)
            while source[j] >= 0:  # copy an unplanted row, so each plant has one origin
                j = rng.randrange(i)
            copy = rows[j].split()
            copy[rng.randrange(len(copy))] = rng.choices(words, cum_weights=cum)[0]
            rows.append(" ".join(copy))
            source.append(j)
            continue
        length = rng.randint(8, 20)
        opening = rng.choice(openings) if rng.random() < 0.5 else []
        rest = rng.choices(words, cum_weights=cum, k=length - len(opening))
        rows.append(" ".join(opening + rest))
        source.append(-1)
    return rows, source


def _accumulate(values):
    total = 0
    for v in values:
        total += v
        yield total


def exact_baseline(rows: list[str]) -> list[bool]:
    """What the engine did before: drop a row whose normalized text was seen already."""
    seen: set[str] = set()
    dup = []
    for text in rows:
        key = normalize(text)
        dup.append(key in seen)
        seen.add(key)
    return dup


def shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    """The index's shingles, recomputed plainly: word n-grams, n-1 boundary tokens a side."""
    w = ["\x02"] * (n - 1) + words_of(text) + ["\x03"] * (n - 1)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()

    start = time.perf_counter()
    rows, source = synthesize(args.rows, args.seed)
    synth_s = time.perf_counter() - start
    rss_before = rss_mib()

    start, cpu = time.perf_counter(), time.process_time()
    exact_dups = sum(exact_baseline(rows))
    exact_s, exact_cpu = time.perf_counter() - start, time.process_time() - cpu

    index = NearDuplicateIndex(threshold=args.threshold)
    start, cpu = time.perf_counter(), time.process_time()
    found = index.check_and_add_many(rows)
    seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    planted = [i for i, s in enumerate(source) if s >= 0]
    promised = [i for i in planted if jaccard(rows[i], rows[source[i]]) >= args.threshold]
    unplanted = [i for i, s in enumerate(source) if s < 0]
    flagged = [i for i in unplanted if found[i] is not None]
    false_pos = [i for i in flagged if jaccard(rows[i], found[i]) < args.threshold - 1e-9]
    result = {
        "rows": args.rows, "threshold": args.threshold, "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_s, 2), "rows_per_s": round(args.rows / seconds),
        "peak_rss_mib": round(peak_rss), "rss_before_index_mib": round(rss_before),
        "indexed_rows": len(index),
        "duplicates_found": sum(f is not None for f in found),
        "planted": len(planted),
        "recall_planted": round(sum(found[i] is not None for i in planted) / len(planted), 4),
        "planted_at_or_above_threshold": len(promised),
        "recall_planted_at_or_above_threshold":
            round(sum(found[i] is not None for i in promised) / max(len(promised), 1), 4),
        "unplanted_flagged": len(flagged),
        "false_positive_rate": round(len(false_pos) / len(unplanted), 6),
        "exact_set_baseline": {"seconds": round(exact_s, 2), "cpu_seconds": round(exact_cpu, 2),
                               "duplicates_found": exact_dups,
                               "rows_per_s": round(args.rows / exact_s)},
        "time_ratio_vs_exact_set": round(seconds / exact_s, 1),
        "cpu_time_ratio_vs_exact_set": round(cpu_s / exact_cpu, 1),
        "synthesis_seconds": round(synth_s, 1),
    }
    report(result, args.json)


if __name__ == "__main__":
    main()
