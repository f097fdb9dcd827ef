"""Seed synthesis, for units that start without labelled rows (S3, and ZeroGen on a task with
`n_seed: 0`): it runs as round 0's augment stage, since there is no student yet to mine.

S3 writes its seed by *explain-then-generate*: the teacher first lists rationales for each
label (what makes a text have it), then writes examples on one rationale each. The rationales
are targets like any other (origin "rationale", the rationale as `input`), so the examples go
through the same top-up asks, quality gates and lineage as LLM2LLM's: every synthetic seed row's
`seed_id` names the rationale it was written on.
"""

from __future__ import annotations

import json

import pyarrow as pa

from engine.records import EXAMPLE, RATIONALE, request_id
from engine.sampling import to_json
from engine.tasks import Task

def rationale_requests(task: Task, labels: list[str], n: int, round_: int, sampling: dict,
                       constrain_format: bool, sample: int = 0) -> pa.Table:
    """One request per label asking for n rationales; with constrain_format, a regex that
    makes the answer a numbered list of n lines."""
    slots = [f"{RATIONALE}:{task.name}:{label}" for label in labels]
    columns = {
        "request_id": [request_id(s, round_, sample) for s in slots],
        "seed_id": slots,
        "messages": [json.dumps(task.rationale_messages(label, n)) for label in labels],
        "sampling": [to_json(sampling)] * len(labels),
        "sample": pa.array([sample] * len(labels), pa.int32()),
    }
    if constrain_format:
        columns["regex"] = [task.rationale_regex(n)] * len(labels)
    return pa.table(columns)


def ask_rationales(task: Task, n: int, round_: int, generate, build_requests,
                   max_tries: int) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Up to n distinct rationales per label: labels short of n are asked again (a new
    `sample`), up to max_tries asks each.

    generate: requests -> GENERATED rows; build_requests(labels, sample) -> requests.
    Returns (rationales as EXAMPLE rows with origin "rationale", requests, generated rows).
    """
    found: dict[str, list[str]] = {label: [] for label in task.labels}
    asked, answers = [], []
    for sample in range(max_tries):
        short = [label for label, got in found.items() if len(got) < n]
        if not short:
            break
        requests = build_requests(short, sample)
        generated = generate(requests)
        asked.append(requests)
        answers.append(generated)
        outputs = {r["request_id"]: r for r in generated.to_pylist()}
        for label, req in zip(short, requests.column("request_id").to_pylist()):
            gen = outputs.get(req)
            if gen is None or gen["error"]:
                continue
            seen = {f.lower() for f in found[label]}
            for text in task.parse_rationales(gen["output"] or "", n):
                if text.lower() not in seen and len(found[label]) < n:
                    found[label].append(text)
                    seen.add(text.lower())
    rows = [dict(id=f"{RATIONALE}:{task.name}:{label}:{k}", task=task.name, input=text,
                 target="", label=label, origin=RATIONALE, round=round_,
                 seed_id=f"{RATIONALE}:{task.name}:{label}:{k}", trigger_prediction="",
                 teacher_model="", prompt_hash="", sampling="")
            for label, texts in found.items() for k, text in enumerate(texts)]
    return (pa.Table.from_pylist(rows, schema=EXAMPLE),
            pa.concat_tables(asked) if asked else pa.table({}),
            pa.concat_tables(answers) if answers else None)
