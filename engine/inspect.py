"""`llm2llm inspect RUN_DIR [--task T] [--round R] [--row ID]`: what a round did, row by row.

For each row the teacher was asked about (a mined error under `llm2llm`; a random seed row
under `random`), the student's wrong output, the rows the teacher wrote for it with their
verdicts and reject reasons, and whether the student got the row right in the next round.
Read from the stage tables alone (mine, augment, the next round's predict), so it works on a
finished, partial or interrupted run, and on a copy of one.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa

from engine.console import printable
from engine.errors import DataError
from engine.provenance import saved_run
from engine.records import RATIONALE, RATIONALES
from engine.storage import RunStorage
from engine.strategies import saved_units


def run_units(run_dir: str) -> tuple[list[str], int]:
    """The unit folders of a saved run, in run order, and its number of rounds."""
    saved = saved_run(run_dir)
    config = saved.get("config", {})
    return [key for key, _ in saved_units(config)], int(config.get("rounds", 0))


def unit_metrics(store: RunStorage, key: str, rounds: int) -> list[dict]:
    """A unit's metrics.json of rounds 0, 1, ... up to the first round not finished."""
    found = []
    for r in range(rounds):
        text = store.read_text(f"{store.round_dir(key, r)}/metrics.json")
        if text is None:
            break
        found.append(json.loads(text))
    return found


def pick_units(keys: list[str], task: str | None) -> list[str]:
    """The units `--task` names: a unit folder (trec/llm2llm/seed_0), a task, or a prefix."""
    if task is None:
        return keys
    chosen = [k for k in keys if k == task or k.startswith(task.rstrip("/") + "/")]
    if not chosen:
        raise DataError(f"--task {task!r}: no such unit in this run; it has "
                        f"{', '.join(keys)}")
    return chosen


def _table(store: RunStorage, key: str, r: int, stage: str) -> pa.Table | None:
    stage_dir = store.stage_dir(key, r, stage)
    return store.read_table(stage_dir) if store.is_complete(stage_dir) else None


def round_rows(store: RunStorage, key: str, r: int) -> list[dict] | None:
    """One entry per row the teacher was asked about in round r (or per mined error if the
    round asked nothing), with its candidates and whether round r+1 got it right. None when
    round r has not been mined yet."""
    errors = _table(store, key, r, "mine")
    if errors is None:
        return None
    candidates = _table(store, key, r, "augment")
    after = _table(store, key, r + 1, "predict")
    right_after = {} if after is None else {
        p["id"]: p["correct"] for p in after.to_pylist() if p["split"] == "train"}
    by_target: dict[str, list[dict]] = {}
    for c in ([] if candidates is None else candidates.to_pylist()):
        by_target.setdefault(c["seed_id"], []).append(c)
    rows = {e["id"]: {"id": e["id"], "input": e["input"], "label": e["label"],
                      "student_output": e["trigger_prediction"], "mined": True}
            for e in errors.to_pylist()}
    train_set = _table(store, key, r, "data")
    known = {} if train_set is None else {e["id"]: e for e in train_set.to_pylist()}
    augment_dir = store.stage_dir(key, r, "augment")
    if store.has_table(augment_dir, RATIONALES):  # s3's round 0: examples on rationales
        known.update({e["id"]: e for e in store.read_table(augment_dir, RATIONALES).to_pylist()})
    for target, cands in by_target.items():  # targets that were not errors (random, s3's
        seed = known.get(target, {})          # rationales, zerogen's label slots)
        rows.setdefault(target, {"id": target, "input": seed.get("input"),
                                 "label": seed.get("label") or cands[0]["label"],
                                 "student_output": cands[0]["trigger_prediction"],
                                 "mined": False, "origin": seed.get("origin")})
    for row in rows.values():
        row["candidates"] = [{"id": c["id"], "input": c["input"], "label": c["label"],
                              "accepted": c["accepted"], "reject_reason": c["reject_reason"]}
                             for c in by_target.get(row["id"], [])]
        row["right_next_round"] = right_after.get(row["id"])
    return list(rows.values())


def reasons(rows: list[dict]) -> Counter:
    """Reject reasons, by kind (the text before the first colon)."""
    return Counter(c["reject_reason"].split(":")[0] for row in rows for c in row["candidates"]
                   if not c["accepted"])


def round_summary(rows: list[dict]) -> dict:
    cands = [c for row in rows for c in row["candidates"]]
    mined = [row for row in rows if row["mined"]]
    known = [row for row in mined if row["right_next_round"] is not None]
    return {"errors": len(mined), "targets": sum(bool(row["candidates"]) for row in rows),
            "candidates": len(cands), "accepted": sum(c["accepted"] for c in cands),
            "fixed": sum(row["right_next_round"] for row in known) if known else None,
            "rejected": dict(reasons(rows).most_common()),
            # the label mix the round adds: aimed rows follow the errors' labels
            "accepted_by_label": dict(Counter(c["label"] for c in cands
                                              if c["accepted"]).most_common())}


def _clip(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[:width - 3] + "..."


def format_round(key: str, r: int, rows: list[dict], width: int = 100) -> str:
    s = round_summary(rows)
    fixed = "next round not run yet" if s["fixed"] is None else f"{s['fixed']} fixed next round"
    lines = [f"{key} round {r}: {s['errors']} errors mined ({fixed}); teacher asked about "
             f"{s['targets']} rows, wrote {s['candidates']}, {s['accepted']} accepted"]
    if s["rejected"]:
        lines.append("  rejected: " + ", ".join(f"{k} {n}" for k, n in s["rejected"].items()))
    if s["accepted_by_label"] and len(s["accepted_by_label"]) <= 20:
        lines.append("  accepted by label: " + ", ".join(
            f"{k} {n}" for k, n in s["accepted_by_label"].items()))
    for row in rows:
        verdict = {True: "fixed", False: "still wrong", None: ""}[row["right_next_round"]]
        head = "error" if row["mined"] else (
            "rationale" if row.get("origin") == RATIONALE else "target (not an error)")
        lines.append(f"\n  {head} {row['id']}  label {row['label'] or '?'}  student said "
                     f"{_clip(row['student_output'], 30)!r}  {verdict}".rstrip())
        if row["input"]:
            lines.append(f"    {_clip(row['input'], width)}")
        for c in row["candidates"]:
            mark = "+" if c["accepted"] else "-"
            why = "" if c["accepted"] else f"  [{_clip(c['reject_reason'], 50)}]"
            lines.append(f"    {mark} {c['label']}: {_clip(c['input'], width - 12)}{why}")
    return "\n".join(lines)


def format_row(key: str, r: int, row: dict) -> str:
    """One target in full: nothing clipped."""
    verdict = {True: "right", False: "still wrong", None: "not run yet"}[row["right_next_round"]]
    lines = [f"{key} round {r}, row {row['id']} ({'mined error' if row['mined'] else 'target'})",
             f"  input:          {row['input']}", f"  label:          {row['label']}",
             f"  student said:   {row['student_output']}", f"  next round:     {verdict}",
             f"  teacher wrote {len(row['candidates'])}:"]
    for c in row["candidates"]:
        lines.append(f"  - {c['id']}: {'accepted' if c['accepted'] else 'rejected: ' + c['reject_reason']}")
        lines.append(f"      label {c['label']}: {c['input']}")
    return "\n".join(lines)


def inspect_run(run_dir: str, task: str | None = None, round_: int | None = None,
                row_id: str | None = None) -> str:
    """The text `llm2llm inspect` prints. Without --round: one summary line per unit and
    round; with it, every target of that round; with --row, that row in full."""
    keys, rounds = run_units(run_dir)
    units = pick_units(keys, task)
    if round_ is not None and not 0 <= round_ < max(rounds, 1):
        raise DataError(f"--round {round_}: this run has rounds 0 to {rounds - 1}")
    store = RunStorage(run_dir)
    out = []
    for key in units:
        for r in ([round_] if round_ is not None else range(rounds)):
            rows = round_rows(store, key, r)
            if rows is None:
                continue
            if row_id is not None:
                out += [format_row(key, r, row) for row in rows if row["id"] == row_id]
            elif round_ is not None:
                out.append(format_round(key, r, rows))
            else:
                s = round_summary(rows)
                fixed = "-" if s["fixed"] is None else s["fixed"]
                out.append(f"{key} r{r}: errors {s['errors']}, fixed next round {fixed}, "
                           f"asked about {s['targets']}, wrote {s['candidates']}, accepted "
                           f"{s['accepted']}; rejected "
                           + (", ".join(f"{k} {n}" for k, n in s["rejected"].items()) or "none"))
    if row_id is not None and not out:
        raise DataError(f"--row {row_id!r}: not a row the teacher was asked about in "
                        f"{'round ' + str(round_) if round_ is not None else 'any round'} of "
                        f"{', '.join(units)}; `llm2llm inspect {run_dir} --round R` lists them")
    if not out:
        return f"{run_dir}: no round has been mined yet (see `llm2llm status {run_dir}`)"
    if round_ is None and row_id is None:
        out.append("\nDetails: --round R (every row of a round), --row ID (one row in full)")
    return printable("\n".join(out))  # rows hold teacher and data text: no escape reaches a tty
