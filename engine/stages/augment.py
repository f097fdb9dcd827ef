"""AUGMENT: teacher requests per error, then parse -> verify -> dedup -> decontaminate.

Every candidate the teacher wrote is kept as a row (accepted or not, with the reason), so the
round report can count accept rates and a user can inspect what was thrown away.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from engine.records import CANDIDATE, EXAMPLE, GENERATED, require_columns
from engine.sampling import to_json
from engine.tasks import Parsed, Task


def normalize_text(text: str) -> str:
    """Key for exact-duplicate checks: case and whitespace do not make a new example."""
    return re.sub(r"\s+", " ", text).strip().lower()


def request_id(seed_id: str, round_: int) -> str:
    """One teacher request per seed row and round."""
    return f"{seed_id}@r{round_}"


def teacher_requests(errors: pa.Table, task: Task, n_per_error: int, round_: int,
                     sampling: dict, constrain_format: bool = False) -> pa.Table:
    """One teacher request per wrong seed row, asking for `n_per_error` new examples.

    sampling: the teacher's parameters for this task (engine/sampling.py), carried by every
    row. With constrain_format, each request carries a `regex` the backend enforces while
    decoding. `seed_id` ties each request to the seed row it is about.
    """
    require_columns(errors, [f.name for f in EXAMPLE], "augment")
    rows = errors.to_pylist()
    columns = {
        "request_id": [request_id(r["id"], round_) for r in rows],
        "seed_id": [r["id"] for r in rows],
        "messages": [json.dumps(task.teacher_messages(r, r["trigger_prediction"], n_per_error))
                     for r in rows],
        "sampling": [to_json(sampling)] * len(rows),
    }
    if constrain_format:
        columns["regex"] = [task.teacher_format_regex(r, n_per_error) for r in rows]
    return pa.table(columns)


def parse_candidates(errors: pa.Table, requests: pa.Table, generated: pa.Table, task: Task,
                     round_: int, teacher_model: str, n_per_error: int,
                     known_inputs: set[str], test_inputs: set[str]) -> pa.Table:
    """Turn teacher outputs into CANDIDATE rows, accepted or rejected with a reason.

    Lineage (seed row, trigger, sampling) comes from the request that produced the row. At
    most `n_per_error` rows are accepted per seed row: a teacher that writes more does not
    get more weight in training (the surplus is rejected as over_n_per_error).
    known_inputs: normalised inputs already in the training set (duplicates are dropped);
    test_inputs: normalised test inputs (a candidate equal to one would leak the test set).
    """
    require_columns(generated, [f.name for f in GENERATED], "augment")
    require_columns(requests, ["request_id", "seed_id", "sampling"], "augment")
    seeds = {r["id"]: r for r in errors.to_pylist()}
    answers = {r["request_id"]: r for r in generated.to_pylist()}
    seen, kept, rows = set(known_inputs), Counter(), []
    for req in requests.select(["request_id", "seed_id", "sampling"]).to_pylist():
        seed, gen = seeds[req["seed_id"]], answers.get(req["request_id"])
        for k, cand in enumerate(_parse(task, seed, gen)):
            reason = cand.reject_reason or _dedup_reason(cand.input, seen, test_inputs)
            if not reason and kept[seed["id"]] >= n_per_error:
                reason = f"over_n_per_error: {n_per_error} already kept for this seed row"
            if not reason:
                seen.add(normalize_text(cand.input))
                kept[seed["id"]] += 1
            rows.append(dict(
                id=f"{req['request_id']}#{k}", task=task.name, input=cand.input,
                target=cand.target, label=cand.label, origin="synthetic", round=round_,
                seed_id=seed["id"], trigger_prediction=seed["trigger_prediction"],
                teacher_model=teacher_model, prompt_hash=task.prompts.hash,
                sampling=req["sampling"], accepted=not reason, reject_reason=reason))
    return pa.Table.from_pylist(rows, schema=CANDIDATE)


def _parse(task: Task, seed: dict, gen: dict | None) -> list[Parsed]:
    if gen is None or gen["error"]:
        reason = "teacher_error: " + ("missing output" if gen is None else gen["error"])
        return [Parsed(reject_reason=reason)]
    return task.parse_teacher(gen["output"] or "", seed)


def _dedup_reason(text: str, seen: set[str], test_inputs: set[str]) -> str:
    key = normalize_text(text)
    if key in test_inputs:
        return "in_test_set"
    if key in seen:
        return "duplicate"
    return ""


def accepted_examples(candidates: pa.Table) -> pa.Table:
    """The accepted candidates as training examples (EXAMPLE schema)."""
    accepted = candidates.filter(pc.field("accepted"))
    return accepted.select([f.name for f in EXAMPLE]).cast(EXAMPLE)
