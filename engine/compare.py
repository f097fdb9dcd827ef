"""The table a user shows their team: per task, strategy and round, test accuracy over the
training seeds (mean, spread), that of the round each seed would ship (chosen on its guard
rows), rows added, teacher requests, yield and tokens.

Read from each unit's metrics.json, so it can be rebuilt from any finished or partial run.
Written as <run_dir>/compare.json and compare.parquet.
"""

from __future__ import annotations

import json
import statistics

import pyarrow as pa

from engine.config import RunConfig
from engine.console import text_table
from engine.metrics import chosen_round
from engine.storage import RunStorage
from engine.strategies import strategy_class, unit_keys


def compare_rows(cfg: RunConfig) -> list[dict]:
    """One row per (task, strategy, round) with every seed's metrics found so far. seed_only
    trains once: its round 0 stands for every round; a unit that stopped early, its last
    round for the later ones."""
    store = RunStorage(cfg.run_dir)
    compare = cfg.compare.model_dump() if cfg.compare else None
    rows = []
    for task in cfg.tasks:
        units: dict[str, list[tuple[int, str]]] = {}
        for name, seed, key in unit_keys(task.name, compare, cfg.strategy.name, cfg.seed):
            units.setdefault(name, []).append((seed, key))
        for name, seeds in units.items():
            last = strategy_class(name).rounds(cfg.rounds) - 1  # seed_only: 0
            so_far: dict[str, list[dict]] = {key: [] for _, key in seeds}
            for r in range(cfg.rounds):
                found, chosen = [], []  # the seeds with this round, and each one's choice
                for _, key in seeds:
                    if m := _metrics(store, key, min(r, last)):
                        so_far[key].append(m)
                        found.append(m)
                        chosen.append(chosen_round(so_far[key]))
                if found:
                    rows.append(_summary(task.name, name, r, found, chosen))
    return rows


def _metrics(store: RunStorage, key: str, r: int) -> dict | None:
    """Round r's metrics; for a unit that stopped before round r (engine/stopping.py), its
    last round's: the student it ended with stands for the rounds it did not run."""
    text = store.read_text(f"{store.round_dir(key, r)}/metrics.json")
    if text:
        return json.loads(text)
    for earlier in range(r - 1, -1, -1):
        text = store.read_text(f"{store.round_dir(key, earlier)}/metrics.json")
        if text:
            last = json.loads(text)
            if not last.get("stop_reason"):
                return None
            # the same student, but nothing was asked, generated or fixed in this round
            return {**last, "round": r, "n_requests": 0, "tokens": 0, "teacher_yield": None,
                    "fix_rate": None, "guard_fix_rate": None}
    return None


def _summary(task: str, strategy: str, r: int, found: list[dict],
             chosen: list[dict | None]) -> dict:
    acc = [m["test_accuracy"] for m in found if m["test_accuracy"] is not None]
    # what each seed would ship after this round (chosen_round; None without guard rows)
    picked = [m["test_accuracy"] for m in chosen if m and m["test_accuracy"] is not None]
    fixes = [m["fix_rate"] for m in found if m.get("fix_rate") is not None]
    guard_fixes = [m["guard_fix_rate"] for m in found if m.get("guard_fix_rate") is not None]
    yields = [m["teacher_yield"] for m in found if m.get("teacher_yield") is not None]
    tops = [m["test_top_answer_share"] for m in found if m.get("test_top_answer_share")]
    return {
        "task": task, "strategy": strategy, "round": r, "seeds": len(found),
        "test_accuracy_mean": statistics.fmean(acc) if acc else None,
        "test_accuracy_std": statistics.stdev(acc) if len(acc) > 1 else None,
        "test_accuracy_min": min(acc, default=None), "test_accuracy_max": max(acc, default=None),
        "test_accuracy_by_seed": [m["test_accuracy"] for m in found],
        "chosen_accuracy_mean": statistics.fmean(picked) if picked else None,
        "chosen_accuracy_std": statistics.stdev(picked) if len(picked) > 1 else None,
        "chosen_accuracy_by_seed": [m and m["test_accuracy"] for m in chosen],
        "chosen_round_by_seed": [m and m["round"] for m in chosen],
        "n_synthetic": statistics.fmean(m["n_synthetic"] for m in found),  # rows trained on
        "fix_rate_mean": statistics.fmean(fixes) if fixes else None,
        # the same on guard rows (no request aimed, nothing trained on): what carries over
        "guard_fix_rate_mean": statistics.fmean(guard_fixes) if guard_fixes else None,
        # the most one-sided seed: the share of its test answers that were its commonest
        # label (1.00: a student that answers one label, its accuracy that label's share)
        "top_answer_share_max": max(tops, default=None),
        "teacher_requests": sum(m.get("n_requests") or 0 for m in found),
        "rows_added": sum(m.get("n_accepted") or 0 for m in found),  # this round, all seeds
        "teacher_yield_mean": statistics.fmean(yields) if yields else None,
        "tokens": sum(m["tokens"] for m in found),
    }


def write_compare(cfg: RunConfig) -> list[dict]:
    rows = compare_rows(cfg)
    store = RunStorage(cfg.run_dir)
    store.write_json(store.path("compare.json"), rows)
    store.write_table(store.root, pa.Table.from_pylist(rows), name="compare")
    return rows


COLUMNS = [("task", "{}"), ("strategy", "{}"), ("round", "{}"), ("seeds", "{}"),
           ("test_accuracy_mean", "{:.3f}"), ("test_accuracy_std", "{:.3f}"),
           ("chosen_accuracy_mean", "{:.3f}"), ("chosen_accuracy_std", "{:.3f}"),
           ("n_synthetic", "{:.0f}"), ("fix_rate_mean", "{:.2f}"),
           ("guard_fix_rate_mean", "{:.2f}"),
           ("top_answer_share_max", "{:.2f}"), ("teacher_requests", "{}"),
           ("rows_added", "{}"), ("teacher_yield_mean", "{:.2f}"), ("tokens", "{}")]
# chosen: the test accuracy of the round each seed would ship so far (the best on its guard
# rows; "-" without tasks.<i>.n_guard); synthetic: rows trained on, mean over seeds; fixed:
# of last round's mined errors, the share right now; guard_fixed: the same for the guard rows
# it got wrong, which nothing was aimed at (a fix rate far above it is rows learnt, not skill);
# top_answer: the most one-sided seed's share of its commonest test answer; asks, added and
# tokens: this round's teacher requests, rows accepted and tokens, summed over the seeds
# (budgets are read off these)
HEADERS = ["task", "strategy", "round", "seeds", "test_acc", "+-std", "chosen", "+-std",
           "synthetic", "fixed", "guard_fixed", "top_answer", "asks", "added", "yield", "tokens"]


def format_compare(rows: list[dict]) -> str:
    cells = [["-" if row[k] is None else fmt.format(row[k]) for k, fmt in COLUMNS]
             for row in rows]
    return text_table(HEADERS, cells)
