"""Teacher labels: how well the teacher labels real rows of a classification task, against the
rows' true labels, zero-shot and k-shot, free and constrained to the label set, in one run.

    python -m benchmarks.teacher_labels --task trec --rows 200 --json results/teacher_labels.json

Why it matters: the rows a teacher writes carry the label it was asked for, and nothing in the
gates can tell whether the text has that label. A check that has the teacher label its own rows
again (`teacher.check_answers`, off by default for classification) is worth only as much as
the teacher's labelling: this measures that on rows whose labels are known (the task's first
validation rows, as `mine_from: validation` cuts them). Compare it with the student's test
accuracy: a teacher that labels worse than the student cannot clean the student's data.
The prompt is the student's (the task's `student` template), as the check asks; k-shot shows
`--shots` seed rows per label first, as chat turns answered with their labels.
Runs vLLM in this process (no Ray): it measures the teacher, not the pipeline.
"""

from __future__ import annotations

import argparse
import os
import random
import re
from collections import Counter
from pathlib import Path

from benchmarks import report
from benchmarks.teacher_yield import task_config
from engine.config import TeacherConfig, load_config
from engine.generation.vllm_replicas import engine_kwargs
from engine.models import resolve_model
from engine.tasks import build_task


def shot_messages(task, seed: list[dict], shots: int, rng: random.Random) -> list[dict]:
    """`shots` seed rows per label (fewer where the seed has fewer), shuffled, each a user turn
    in the student's prompt answered with its label."""
    rows = []
    for label in task.labels:
        have = [r for r in seed if r["label"] == label]
        rows += rng.sample(have, min(shots, len(have)))
    rng.shuffle(rows)
    messages = []
    for row in rows:
        messages += task.student_messages(row["input"])
        messages.append({"role": "assistant", "content": row["label"]})
    return messages


def label_accuracy(llm, task, rows: list[dict], prefix: list[dict], constrain: bool) -> dict:
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    params = SamplingParams(temperature=0.0, max_tokens=16)
    if constrain:  # the answer can only be one of the labels
        params.structured_outputs = StructuredOutputsParams(
            regex="(" + "|".join(re.escape(label) for label in task.labels) + ")")
    outputs = llm.chat([prefix + task.student_messages(r["input"]) for r in rows], params,
                       use_tqdm=False)
    got = [task.find_label(o.outputs[0].text) for o in outputs]
    return {"accuracy": round(sum(g == r["label"] for g, r in zip(got, rows)) / len(rows), 3),
            "answers": dict(Counter(g or "(no label)" for g in got))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="trec", help="a built-in classification task")
    parser.add_argument("--rows", type=int, default=200, help="real rows to label")
    parser.add_argument("--seed-rows", type=int, default=55,
                        help="the seed the shots come from; TREC 1%%: 55")
    parser.add_argument("--shots", type=int, default=2, help="seed rows per label, k-shot")
    parser.add_argument("--config", help="a job config whose teacher settings to use")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--gpu-memory-utilization", type=float,
                        help="the KV cache share (on CPU: of a NUMA node's memory)")
    args = parser.parse_args()
    teacher = load_config(args.config).teacher if args.config else TeacherConfig()
    if args.gpu_memory_utilization:
        teacher = teacher.model_copy(update={"gpu_memory_utilization":
                                             args.gpu_memory_utilization})
    cfg = task_config(args.task, args.seed_rows)
    task = build_task(cfg.model_copy(update={"n_validation": args.rows}), seed=0)
    if not getattr(task, "find_label", None):
        parser.error(f"--task {args.task}: not a classification task (its rows have no label set)")
    seed, _, validation, _ = task.splits(validation=True)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    from vllm import LLM

    llm = LLM(model=resolve_model(teacher.model), seed=0, **engine_kwargs(teacher))
    shots = shot_messages(task, seed, args.shots, random.Random(0))
    results = {f"{name}, {'constrained' if constrain else 'free'}":
               label_accuracy(llm, task, validation, prefix, constrain)
               for name, prefix in (("zero-shot", []), (f"{args.shots}-shot per label", shots))
               for constrain in (False, True)}
    report({"task": args.task, "teacher": teacher.model, "rows": len(validation),
            "true_labels": dict(Counter(r["label"] for r in validation)),
            "majority_label_accuracy": round(
                max(Counter(r["label"] for r in validation).values()) / len(validation), 3),
            "results": results}, args.json)


if __name__ == "__main__":
    main()
