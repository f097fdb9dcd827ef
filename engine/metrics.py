"""Per-round metrics (metrics.json) and the round table printed after each round."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from engine.console import text_table


def accuracy(predictions: pa.Table, split: str, origin: str | None = None) -> float | None:
    """Share of a split's predictions (of rows of one origin, if given) graded correct."""
    rows = [r for r in predictions.to_pylist()
            if r["split"] == split and (origin is None or r["origin"] == origin)]
    return sum(r["correct"] for r in rows) / len(rows) if rows else None


def chosen_round(rounds: list[dict]) -> dict | None:
    """Of a unit's rounds so far, the one it would ship: the best on its guard rows (the
    earliest of equals: fewer teacher rows), or None without guard rows (tasks.<i>.n_guard)."""
    guarded = [m for m in rounds if m.get("guard_accuracy") is not None]
    return max(guarded, key=lambda m: m["guard_accuracy"], default=None)


NO_ANSWER = "(none)"  # a test output from which no label could be read


def answer_mix(predictions: pa.Table, split: str = "test") -> dict:
    """What a labelled task's student answered on a split: label -> rows (NO_ANSWER where it
    named none), and the most common answer's share. A share near 1.0 is a student that
    answers one label whatever it reads (a weak seed, or rounds whose rows swung to one
    label): its accuracy is then the majority label's share, not what it learnt."""
    answers = [p["extracted"] or NO_ANSWER for p in predictions.to_pylist()
               if p["split"] == split]
    if not answers:
        return {}
    counts = Counter(answers)
    return {f"{split}_answers": dict(sorted(counts.items())),
            f"{split}_top_answer_share": max(counts.values()) / len(answers)}


TABLE_COLUMNS = [  # (metrics key, header, format)
    ("unit", "task", "{}"), ("round", "round", "{}"), ("n_train", "n_train", "{}"),
    ("train_accuracy", "train_acc", "{:.3f}"), ("test_accuracy", "test_acc", "{:.3f}"),
    ("fix_rate", "fixed", "{:.2f}"), ("break_rate", "broke", "{:.2f}"),
    ("n_errors", "errors", "{}"), ("n_requests", "asks", "{}"),
    ("n_generated", "generated", "{}"), ("n_accepted", "accepted", "{}"),
    ("teacher_yield", "yield", "{:.2f}"), ("tokens", "tokens", "{}"),
    ("cost_usd", "cost", "${:.4f}"), ("seconds", "seconds", "{:.0f}"),
]


def generation_usage(generated: pa.Table, prices) -> dict:
    """Token accounting of one stage's GENERATED rows. Tokens and cost count every row, cached
    or not (what the stage's data cost, the same whether or not the run was resumed);
    `cached` says how many of them were not generated again this time. Counted by column
    (no row objects): a stage of a million rows costs the driver no more than its table."""
    def total(values) -> int:
        return int(pc.sum(pc.cast(values, pa.int64())).as_py() or 0)

    column = generated.column
    prompt, completion = total(column("prompt_tokens")), total(column("completion_tokens"))
    failed = pc.fill_null(pc.not_equal(pc.fill_null(column("error"), ""), ""), False)
    retries = pc.max_element_wise(pc.subtract(column("attempts"), 1), 0)
    return {"requests": generated.num_rows, "cached": total(pc.fill_null(column("cached"), False)),
            "failed": total(failed), "retries": total(retries),
            "prompt_tokens": prompt, "completion_tokens": completion,
            "cost_usd": _cost(prompt, completion, prices)}


def add_usage(a: dict, b: dict) -> dict:
    """Two parts' generation_usage as one (a stage answered a window at a time)."""
    total = {k: a[k] + b[k] for k in a if k != "cost_usd"}
    total["cost_usd"] = (None if a["cost_usd"] is None or b["cost_usd"] is None
                         else round(a["cost_usd"] + b["cost_usd"], 9))
    return total


def _cost(prompt: int, completion: int, prices) -> float | None:
    if prices is None:
        return None
    return round((prompt * prices.prompt_per_million
                  + completion * prices.completion_per_million) / 1e6, 9)


def fix_rates(previous: tuple[pa.Table, pa.Table] | None,
              predictions: pa.Table) -> tuple[float | None, float | None]:
    """(fix rate, break rate) of a round, from the lineage of the rows: of the rows mined as
    errors in the previous round, the share the student now gets right; of the mining rows it
    got right then, the share it now gets wrong. None in round 0."""
    if previous is None:
        return None, None
    before, mined = previous
    now = {r["id"]: r["correct"] for r in predictions.to_pylist() if r["split"] == "train"}
    right_before = [r["id"] for r in before.to_pylist() if r["split"] == "train" and r["correct"]]
    wrong_ids = [i for i in mined.column("id").to_pylist() if i in now]
    kept = [i for i in right_before if i in now]
    fixed = sum(now[i] for i in wrong_ids) / len(wrong_ids) if wrong_ids else None
    broke = sum(not now[i] for i in kept) / len(kept) if kept else None
    return fixed, broke


def guard_fix_rate(previous: tuple[pa.Table, pa.Table] | None,
                   predictions: pa.Table) -> float | None:
    """Of the guard rows the student got wrong last round, the share it gets right now: the
    fix rate of rows no request was aimed at and nothing was trained on, so set beside the fix
    rate it says how much of that carries over. Where errors are mined from real rows the
    teacher reads (mine_from: validation), its rewrites of those rows teach the student the
    rows themselves (RTE's matrix, llm2llm round 1: mined rows fixed 0.70-0.73, guard rows
    0.40-0.49). None in round 0 or without guard rows."""
    if previous is None:
        return None
    before = previous[0]
    wrong = before.filter(pc.and_(pc.equal(before.column("split"), "guard"),
                                  pc.invert(before.column("correct")))).column("id")
    now = predictions.filter(pc.and_(pc.equal(predictions.column("split"), "guard"),
                                     pc.is_in(predictions.column("id"), value_set=wrong)))
    return pc.mean(now.column("correct")).as_py() if now.num_rows else None


def train_labels(train_set: pa.Table) -> dict[str, dict[str, int]]:
    """origin -> label -> rows of a training set; {} where its rows have no labels."""
    out: dict[str, dict[str, int]] = {}
    for origin, label in zip(train_set.column("origin").to_pylist(),
                             train_set.column("label").to_pylist()):
        if label:
            by_label = out.setdefault(origin, {})
            by_label[label] = by_label.get(label, 0) + 1
    return {o: dict(sorted(c.items())) for o, c in sorted(out.items())}


def round_metrics(task: str, r: int, train_set: pa.Table, predictions: pa.Table,
                  errors: pa.Table, candidates: pa.Table | None, train_stats: dict,
                  timings: dict, usage: dict[str, dict | None], asked: dict | None = None,
                  previous: tuple[pa.Table, pa.Table] | None = None) -> dict:
    origins = Counter(train_set.column("origin").to_pylist())
    preds = predictions.to_pylist()
    cands = candidates.to_pylist() if candidates is not None else []
    rejected = Counter(c["reject_reason"].split(":")[0] for c in cands if not c["accepted"])
    usage = {stage: u for stage, u in usage.items() if u is not None}
    asked = asked or {}
    rows_asked = asked.get("targets", 0) * asked.get("quota", 0)
    n_accepted = sum(c["accepted"] for c in cands)
    fixed, broke = fix_rates(previous, predictions)
    return {
        "task": task,
        "round": r,
        "n_train": train_set.num_rows,  # rows the student was trained on this round
        "n_seed": origins.get("seed", 0),
        "n_synthetic": origins.get("synthetic", 0),
        # what the student was trained on: origin -> label -> rows (labelled tasks), so a round
        # whose written rows swing to one label shows it
        "train_labels": train_labels(train_set),
        "train_accuracy": accuracy(predictions, "train"),  # on the seed (mining) rows
        "test_accuracy": accuracy(predictions, "test"),
        # on the held-out rows that choose the round a unit ships (None without n_guard)
        "guard_accuracy": accuracy(predictions, "guard"),
        "n_test": sum(p["split"] == "test" for p in preds),
        "n_errors": errors.num_rows,  # wrong mining rows (seed rows, unless mine_from: all)
        "fix_rate": fixed,  # of last round's errors, the share right now
        "break_rate": broke,  # of last round's right mining rows, the share wrong now
        "guard_fix_rate": guard_fix_rate(previous, predictions),  # the same on guard rows
        "n_targets": asked.get("targets"),  # rows the strategy asked the teacher about
        "n_requests": asked.get("requests"),  # teacher requests sent, top-up asks included
        # in a compare, what of the budget-setting unit's round this one matched (by, budget)
        "budget_matched": asked.get("matched"),
        "n_rows_asked": rows_asked,  # targets x rows wanted per target
        "n_generated": len(cands),  # candidate examples the teacher's outputs yielded
        "n_accepted": n_accepted,
        # accepted rows / rows asked for: how much of the teacher's budget became training data
        "teacher_yield": n_accepted / rows_asked if rows_asked else None,
        "rejected_by_reason": dict(rejected),
        "n_failed_predictions": sum(bool(p["error"]) for p in preds),
        # usage per generation stage (predict, augment); totals over both
        "usage": usage,
        "tokens": sum(u["prompt_tokens"] + u["completion_tokens"] for u in usage.values()),
        "n_failed_generations": sum(u["failed"] for u in usage.values()),
        "retries": sum(u["retries"] for u in usage.values()),
        "cost_usd": (None if all(u["cost_usd"] is None for u in usage.values())
                     else round(sum(u["cost_usd"] or 0 for u in usage.values()), 9)),
        "train": train_stats,
        "stage_seconds": timings,
        "seconds": round(sum(timings.values()), 1),
    }


def format_table(rows: list[dict]) -> str:
    """A plain-text table, one line per (task, round)."""
    headers = [h for _, h, _ in TABLE_COLUMNS]
    cells = [[_cell(row.get(key), fmt) for key, _, fmt in TABLE_COLUMNS] for row in rows]
    return text_table(headers, cells)


def _cell(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)
