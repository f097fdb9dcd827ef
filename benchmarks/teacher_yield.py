"""Teacher yield: of the rows asked for, how many pass parsing and the quality gates, with the
engine's teacher prompt, constrained decoding on against off, in one run.

    python -m benchmarks.teacher_yield --task trec --rows 30 --json results/yield_trec.json
    python -m benchmarks.teacher_yield --task arithmetic --rows 30
    python -m benchmarks.teacher_yield --task trec --mine validation [--s3] [--check]

The targets are the first `--rows` seed rows of the task (as a round's errors would be); each
is asked for `n_per_error` rows, with top-up asks up to `max_tries` (the engine's defaults, or
a config's); with `--mine validation`, the first real validation rows (as `mine_from:
validation` and s3 mine them; validation rows are then protected from leaks too), asked with
llm2llm's prompt (worked examples from the seed) or, `--s3`, S3's error extrapolation (from
the other validation rows: S3 has no seed). Prints yield (accepted / asked) first-ask and
with top-ups, reject reasons, and samples of accepted and rejected rows, so a reader can
judge the rows, not just the count. `--check` turns the teacher's answer check on where it
is off by default (classification): each row is then kept only if the teacher, asked as the
student is, gives it the label it was written for.
Runs vLLM in this process (no Ray): it measures the prompt and gates, not the pipeline.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa

from benchmarks import report
from engine.config import TaskConfig, TeacherConfig, load_config
from engine.generation.vllm_replicas import engine_kwargs
from engine.models import resolve_model
from engine.records import EXAMPLE
from engine.sampling import sampling_params
from engine.stages.augment import AnswerCheck, CandidateFilter, ask_teacher, teacher_requests
from engine.tasks import build_task

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def task_config(name: str, n_seed: int) -> TaskConfig:
    if name == "arithmetic":
        return TaskConfig(name=name, n_seed=n_seed, n_test=200)
    return TaskConfig(name=name, n_seed=n_seed, n_test=500,
                      data={"train": str(DATA / name / "train.jsonl"),
                            "test": str(DATA / name / "test.jsonl")})


def vllm_generate(llm, requests: pa.Table) -> pa.Table:
    """The replica's own request -> params step, then plain LLM.chat."""
    from engine.generation.vllm_replicas import VLLMReplica

    replica = object.__new__(VLLMReplica)
    replica.llm, replica.name = llm, "bench"
    return replica._generate(requests)


def measure(llm, task, seed: list[dict], targets: pa.Table, teacher: TeacherConfig,
            test: list[dict], constrain: bool, validation: list[dict] = (),
            s3: bool = False, samples: int = 12) -> dict:
    sampling = sampling_params(teacher, task.cfg.teacher_sampling)
    checks = teacher.check_answers if teacher.check_answers is not None \
        else task.checkable_answers
    check = AnswerCheck(task, lambda requests: vllm_generate(llm, requests), sampling) \
        if checks else None
    pool = list(validation) if s3 else seed  # s3 has no seed: the driver's worked examples
    filter_ = CandidateFilter(task, 0, teacher.model, teacher.n_per_error,
                              [r["input"] for r in seed],
                              [r["input"] for r in test + list(validation)],
                              teacher.near_dup_threshold, check=check,
                              style_texts=[r["input"] for r in validation] or None)
    requests, _, cands = ask_teacher(
        targets, lambda requests: vllm_generate(llm, requests),
        lambda rows, sample: teacher_requests(rows, task, teacher.n_per_error, 0, sampling,
                                              constrain, sample,
                                              pa.Table.from_pylist(pool, schema=EXAMPLE), s3),
        filter_, teacher.max_tries)
    rows = cands.to_pylist()
    asked = targets.num_rows * teacher.n_per_error
    first_ask = [r for r in rows if r["accepted"] and "~" not in r["id"]]
    accepted = [r for r in rows if r["accepted"]]
    return {
        "constrain_format": constrain, "answer_check": check is not None,
        "targets": targets.num_rows, "rows_asked": asked,
        "requests": requests.num_rows, "candidates": len(rows),
        "yield_first_ask": round(len(first_ask) / asked, 3),
        "yield": round(len(accepted) / asked, 3),
        "targets_filled": sum(1 for t in filter_.targets if filter_.kept[t] >= filter_.quota),
        "rejected": dict(Counter(r["reject_reason"].split(":")[0] for r in rows
                                 if not r["accepted"])),
        "accepted_samples": [(r["label"], r["input"]) for r in accepted[:samples]],
        "rejected_samples": [(r["reject_reason"][:60], r["input"][:160])
                             for r in rows if not r["accepted"]][:samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="trec")
    parser.add_argument("--rows", type=int, default=30, help="targets asked about")
    parser.add_argument("--seed-rows", type=int, default=55,
                        help="the seed set (training rows, worked examples); TREC 1%%: 55")
    parser.add_argument("--config", help="a job config whose teacher settings to use")
    parser.add_argument("--no-check", action="store_true",
                        help="teacher.check_answers off (the answer check)")
    parser.add_argument("--check", action="store_true",
                        help="teacher.check_answers on (off by default for classification)")
    parser.add_argument("--mine", choices=("seed", "validation"), default="seed",
                        help="the targets: seed rows, or real validation rows")
    parser.add_argument("--s3", action="store_true",
                        help="ask with the task's S3 prompt file (error extrapolation)")
    parser.add_argument("--samples", type=int, default=12,
                        help="accepted and rejected rows shown, to judge them")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--gpu-memory-utilization", type=float,
                        help="the KV cache share (on CPU: of a NUMA node's memory)")
    args = parser.parse_args()
    teacher = (load_config(args.config).teacher if args.config
               else TeacherConfig())
    if args.no_check or args.check:
        teacher = teacher.model_copy(update={"check_answers": args.check})
    if args.gpu_memory_utilization:
        teacher = teacher.model_copy(update={"gpu_memory_utilization":
                                             args.gpu_memory_utilization})
    validating = args.mine == "validation"
    cfg = task_config(args.task, args.seed_rows if validating else max(args.seed_rows, args.rows))
    task = build_task(cfg.model_copy(update={"n_validation": max(cfg.n_validation, args.rows)}),
                      seed=0)
    seed, test, validation = task.splits(validation=validating)
    targets = pa.Table.from_pylist((validation if validating else seed)[: args.rows],
                                   schema=EXAMPLE)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    from vllm import LLM

    llm = LLM(model=resolve_model(teacher.model), seed=0, **engine_kwargs(teacher))
    results = [measure(llm, task, seed, targets, teacher, test, c, validation, args.s3,
                       args.samples)
               for c in (False, True)]
    off, on = results
    summary = {"task": args.task, "teacher": teacher.model, "targets": args.mine,
               "prompts": "s3" if args.s3 else "llm2llm", "n_per_error": teacher.n_per_error,
               "max_tries": teacher.max_tries, "results": results,
               "yield_ratio_constrained_vs_not": round(on["yield"] / off["yield"], 2)
               if off["yield"] else None}
    report(summary, args.json)


if __name__ == "__main__":
    main()
