"""AUGMENT: teacher requests per error, then parse -> verify -> dedup -> decontaminate.

Every candidate the teacher wrote is kept as a row (accepted or not, with the reason), so the
round report can count accept rates and a user can inspect what was thrown away.
"""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.compute as pc

from engine.records import CANDIDATE, EXAMPLE, GENERATED, require_columns
from engine.tasks import Parsed, Task


def normalize_text(text: str) -> str:
    """Key for exact-duplicate checks: case and whitespace do not make a new example."""
    return re.sub(r"\s+", " ", text).strip().lower()


def request_id(seed_id: str, round_: int) -> str:
    """One teacher request per seed row and round."""
    return f"{seed_id}@r{round_}"


def teacher_requests(errors: pa.Table, task: Task, n_per_error: int, round_: int,
                     constrain_format: bool = False) -> pa.Table:
    """One teacher request per wrong seed row, asking for `n_per_error` new examples.

    With constrain_format, each request carries a `regex` the backend enforces while decoding.
    """
    require_columns(errors, [f.name for f in EXAMPLE], "augment")
    rows = errors.to_pylist()
    columns = {
        "request_id": [request_id(r["id"], round_) for r in rows],
        "messages": [json.dumps(task.teacher_messages(r, r["trigger_prediction"], n_per_error))
                     for r in rows],
    }
    if constrain_format:
        columns["regex"] = [task.teacher_format_regex(r, n_per_error) for r in rows]
    return pa.table(columns)


def parse_candidates(errors: pa.Table, generated: pa.Table, task: Task, round_: int,
                     teacher_model: str, sampling: dict, known_inputs: set[str],
                     test_inputs: set[str]) -> pa.Table:
    """Turn teacher outputs into CANDIDATE rows, accepted or rejected with a reason.

    known_inputs: normalised inputs already in the training set (duplicates are dropped);
    test_inputs: normalised test inputs (a candidate equal to one would leak the test set).
    """
    require_columns(generated, [f.name for f in GENERATED], "augment")
    by_request = {r["request_id"]: r for r in generated.to_pylist()}
    seen = set(known_inputs)
    rows = []
    for seed in errors.to_pylist():
        gen = by_request.get(request_id(seed["id"], round_))
        if gen is None or gen["error"]:
            reason = "teacher_error: " + ("missing output" if gen is None else gen["error"])
            parsed = [Parsed(reject_reason=reason)]
        else:
            parsed = task.parse_teacher(gen["output"] or "", seed)
        for k, cand in enumerate(parsed):
            reason = cand.reject_reason or _dedup_reason(cand.input, seen, test_inputs)
            if not reason:
                seen.add(normalize_text(cand.input))
            rows.append(dict(
                id=f"{request_id(seed['id'], round_)}#{k}", task=task.name, input=cand.input,
                target=cand.target, label=cand.label, origin="synthetic", round=round_,
                seed_id=seed["id"], trigger_prediction=seed["trigger_prediction"],
                teacher_model=teacher_model, prompt_hash=task.prompts.hash,
                sampling=json.dumps(sampling, sort_keys=True), accepted=not reason,
                reject_reason=reason))
    return pa.Table.from_pylist(rows, schema=CANDIDATE)


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
