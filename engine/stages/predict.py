"""PREDICT: the student over the mining, test and guard rows, each output graded by the task."""

from __future__ import annotations

import json

import pyarrow as pa

from engine.records import EXAMPLE, GENERATED, GENERATIONS, PREDICTION, StageResult, require_columns
from engine.sampling import to_json
from engine.tasks import Task


def student_requests(examples: pa.Table, task: Task, sampling: dict) -> pa.Table:
    """One chat request per example; request_id is the example id. `sampling`: the student's
    parameters for this task (engine/sampling.py), carried by every row."""
    require_columns(examples, ["id", "input"], "predict")
    ids = examples.column("id").to_pylist()
    messages = [json.dumps(task.student_messages(text)) for text in examples.column("input").to_pylist()]
    # `input`: the raw text, for a student that reads it directly (an encoder classifier)
    return pa.table({"request_id": ids, "messages": messages,
                     "sampling": [to_json(sampling)] * len(ids),
                     "input": examples.column("input")})


def grade(examples: pa.Table, generated: pa.Table, task: Task, split: str) -> pa.Table:
    """Join outputs back to examples by id and grade them. A failed request grades as wrong."""
    require_columns(examples, [f.name for f in EXAMPLE], "grade")
    require_columns(generated, [f.name for f in GENERATED], "grade")
    by_id = {row["request_id"]: row for row in generated.to_pylist()}
    rows = []
    for ex in examples.to_pylist():
        gen = by_id.get(ex["id"])
        error = "missing output" if gen is None else gen["error"]
        output = "" if gen is None else (gen["output"] or "")
        extracted, correct = task.grade(output, ex["label"]) if not error else ("", False)
        rows.append(dict(id=ex["id"], task=task.name, split=split, origin=ex["origin"],
                         output=output, extracted=extracted, correct=correct,
                         completion_tokens=0 if gen is None else gen["completion_tokens"],
                         error=error))
    return pa.Table.from_pylist(rows, schema=PREDICTION)


def predict(task: Task, mining: pa.Table, test: pa.Table, model: str, generate,
            sampling: dict, guard: pa.Table | None = None) -> StageResult:
    """The student `model` over the mining set, the test set and the guard rows (the held-out
    rows that choose the round a unit ships; tasks.<i>.n_guard), in one pass, graded.
    generate: (requests, model) -> GENERATED rows, kept beside the predictions."""
    guard = guard if guard is not None else EXAMPLE.empty_table()
    every = pa.concat_tables([mining, test, guard])
    generated = generate(student_requests(every, task, sampling), model)
    predictions = pa.concat_tables([grade(mining, generated, task, "train"),
                                    grade(test, generated, task, "test"),
                                    grade(guard, generated, task, "guard")])
    return StageResult(predictions, beside={GENERATIONS: generated})
