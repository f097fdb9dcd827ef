"""Teacher yield: of the rows asked for, how many pass parsing and the quality gates, with the
engine's teacher prompt, constrained decoding on against off, in one run (and the wall time
of each: accepted rows per minute, constrained against not).

    python -m benchmarks.teacher_yield --task trec --rows 30 --json results/yield_trec.json
    python -m benchmarks.teacher_yield --task arithmetic --rows 30
    python -m benchmarks.teacher_yield --task trec --mine validation [--s3] [--check]
    python -m benchmarks.teacher_yield --task sst2 --seed-synthesis --per-request 8,4,2

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

`--seed-synthesis`: S3's round 0 instead, explain-then-generate with no seed: the rationales
are asked once, then each `--per-request` count writes the same `--rows-per-label` rows a label
on them (`strategy.seed_rows_per_request`, its first value the baseline), through the gates as
round 0 does. Prints per count: yield, requests, completion tokens, accepted rows per 1,000
completion tokens (`ratio` against the baseline's), and how many rejects repeat a text of the
same answer.
Runs vLLM in this process (no Ray): it measures the prompt and gates, not the pipeline.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa

from benchmarks import report
from engine.config import TaskConfig, TeacherConfig, load_config
from engine.generation.vllm_replicas import engine_kwargs
from engine.models import resolve_model
from engine.records import EXAMPLE
from engine.sampling import sampling_params
from engine.stages.augment import (AnswerCheck, CandidateFilter, ask_teacher, repeated,
                                   teacher_requests)
from engine.stages.synthesize import ask_rationales, rationale_requests
from engine.strategies import seed_quota
from engine.tasks import build_task

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def task_config(name: str, n_seed: int, fields: dict | None = None) -> TaskConfig:
    """The task on its shared/data files; `fields`: the files' columns (a config's)."""
    if name == "arithmetic":
        return TaskConfig(name=name, n_seed=n_seed, n_test=200)
    test = DATA / name / "test.jsonl"  # GLUE's tasks (SST-2, RTE) test on their dev split
    if not test.is_file():
        test = DATA / name / "validation.jsonl"
    mapped = {"fields": fields} if fields else {}
    return TaskConfig(name=name, n_seed=n_seed, n_test=500, **mapped,
                      data={"train": str(DATA / name / "train.jsonl"), "test": str(test)})


_REPLICAS: dict[int, object] = {}


def vllm_generate(llm, requests: pa.Table) -> pa.Table:
    """The replica's own request -> params -> batch steps, on this process's engine (one
    replica per engine: its continuous batch holds the engine's thread)."""
    from engine.generation.continuous_batch import ContinuousBatch
    from engine.generation.vllm_replicas import VLLMReplica, _rejects

    replica = _REPLICAS.get(id(llm))
    if replica is None:
        replica = _REPLICAS[id(llm)] = object.__new__(VLLMReplica)
        replica.llm, replica.name, replica.rows_answered = llm, "bench", 0
        replica.batch = ContinuousBatch(llm, rejects=_rejects())
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
                              style_texts=[r["input"] for r in validation] or None,
                              real_texts=[r["input"] for r in seed + list(validation)])
    start = time.perf_counter()
    requests, generated, cands = ask_teacher(
        targets, lambda requests: vllm_generate(llm, requests),
        lambda rows, sample: teacher_requests(rows, task, teacher.n_per_error, 0, sampling,
                                              constrain, sample,
                                              pa.Table.from_pylist(pool, schema=EXAMPLE),
                                              task.s3_prompts if s3 else None),
        filter_, teacher.max_tries)
    seconds = time.perf_counter() - start  # the asks and the gates: what a round waits for
    tokens = sum(generated.column("completion_tokens").to_pylist())
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
        "seconds": round(seconds, 1), "completion_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "accepted_per_minute": round(60 * len(accepted) / seconds, 2) if seconds else None,
        "rejected": dict(Counter(r["reject_reason"].split(":")[0] for r in rows
                                 if not r["accepted"])),
        "accepted_samples": [(r["label"], r["input"]) for r in accepted[:samples]],
        "rejected_samples": [(r["reject_reason"][:60], r["input"][:160])
                             for r in rows if not r["accepted"]][:samples],
    }


def seed_synthesis(llm, task, teacher: TeacherConfig, test: list[dict],
                   validation: list[dict], per_request: list[int], rows_per_label: int,
                   rationales_per_label: int, samples: int) -> dict:
    """S3's round 0 at each rows-per-request count, on one set of rationales (a pair task's
    hypotheses written on real premises, as s3 writes them: strategy.real_first_text)."""
    if task.is_pair:
        task = task.writing_second(task.first_text_pool())
    generate = lambda requests: vllm_generate(llm, requests)  # noqa: E731
    sampling = sampling_params(teacher, task.cfg.teacher_sampling)
    rationales, _, _ = ask_rationales(
        task, rationales_per_label, 0, generate,
        lambda labels, sample: rationale_requests(task, labels, rationales_per_label, 0,
                                                  sampling, teacher.constrained, sample),
        teacher.max_tries)
    results = []
    for k in per_request:
        quota, repeats = seed_quota(rows_per_label, rationales_per_label, k)
        targets = repeated(rationales, repeats)
        filter_ = CandidateFilter(task, 0, teacher.model, quota, [],
                                  [r["input"] for r in test + validation],
                                  teacher.near_dup_threshold,
                                  style_texts=[r["input"] for r in validation],
                                  prompt_hash=task.s3_prompts.hash,
                                  real_texts=[r["input"] for r in validation])
        requests, generated, cands = ask_teacher(
            targets, generate,
            lambda rows, sample: teacher_requests(rows, task, quota, 0, sampling,
                                                  teacher.constrained, sample, None,
                                                  task.s3_prompts),
            filter_, teacher.max_tries)
        rows = cands.to_pylist()
        accepted = [r for r in rows if r["accepted"]]
        tokens = sum(generated.column("completion_tokens").to_pylist())
        seen: dict[str, set] = {}
        same_answer = 0
        for r in rows:  # a reject whose text its own answer already wrote
            texts = seen.setdefault(r["id"].rsplit("#", 1)[0], set())
            same_answer += not r["accepted"] and r["input"] in texts
            texts.add(r["input"])
        results.append({
            "rows_per_request": k, "asks_per_rationale": repeats, "rows_asked_per_ask": quota,
            "rows_asked": rows_per_label * len(task.labels), "accepted": len(accepted),
            "yield": round(len(accepted) / (rows_per_label * len(task.labels)), 3),
            "requests": requests.num_rows, "completion_tokens": tokens,
            "accepted_per_1k_tokens": round(1000 * len(accepted) / tokens, 2) if tokens else 0,
            "labels": dict(Counter(r["label"] for r in accepted)),
            "rejected": dict(Counter(r["reject_reason"].split(":")[0] for r in rows
                                     if not r["accepted"])),
            "rejects_repeating_their_answer": same_answer,
            "accepted_samples": [(r["label"], r["input"][:160]) for r in accepted[:samples]]})
    base = results[0]["accepted_per_1k_tokens"]
    for r in results:
        r["ratio"] = round(r["accepted_per_1k_tokens"] / base, 2) if base else None
    return {"rationales": rationales.num_rows, "results": results}


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
    parser.add_argument("--seed-synthesis", action="store_true",
                        help="S3's round 0 (rationales, then rows on each) instead")
    parser.add_argument("--per-request", default="8,4,2",
                        help="--seed-synthesis: rows one request asks for, the first the "
                             "baseline")
    parser.add_argument("--rows-per-label", type=int, default=100,
                        help="--seed-synthesis: seed rows asked for per label")
    parser.add_argument("--rationales-per-label", type=int, default=4)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--gpu-memory-utilization", type=float,
                        help="the KV cache share (on CPU: of a NUMA node's memory)")
    args = parser.parse_args()
    job = load_config(args.config) if args.config else None
    teacher = job.teacher if job else TeacherConfig()
    # the files' columns, as the config maps them (RTE's local files: premise, hypothesis)
    fields = next((t.fields for t in job.tasks if t.name == args.task), None) if job else None
    if args.no_check or args.check:
        teacher = teacher.model_copy(update={"check_answers": args.check})
    if args.gpu_memory_utilization:
        teacher = teacher.model_copy(update={"gpu_memory_utilization":
                                             args.gpu_memory_utilization})
    validating = args.mine == "validation" or args.seed_synthesis
    cfg = task_config(args.task, args.seed_rows if validating else max(args.seed_rows, args.rows),
                      fields)
    if args.seed_synthesis:  # as the s3 configs: no seed, 200 real validation rows
        cfg = cfg.model_copy(update={"n_seed": 0, "n_validation": 200})
    task = build_task(cfg.model_copy(update={"n_validation": max(cfg.n_validation, args.rows)}),
                      seed=0)
    seed, test, validation, _ = task.splits(validation=validating)
    targets = pa.Table.from_pylist((validation if validating else seed)[: args.rows],
                                   schema=EXAMPLE)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    from vllm import LLM

    llm = LLM(model=resolve_model(teacher.model), seed=0, **engine_kwargs(teacher))
    if args.seed_synthesis:
        counts = [int(k) for k in args.per_request.split(",")]
        summary = {"task": args.task, "teacher": teacher.model, "mode": "s3 seed synthesis",
                   "temperature": teacher.temperature, "max_tries": teacher.max_tries,
                   **seed_synthesis(llm, task, teacher, test, validation, counts,
                                    args.rows_per_label, args.rationales_per_label,
                                    args.samples)}
        report(summary, args.json)
        return
    results = [measure(llm, task, seed, targets, teacher, test, c, validation, args.s3,
                       args.samples)
               for c in (False, True)]
    off, on = results
    summary = {"task": args.task, "teacher": teacher.model, "targets": args.mine,
               "prompts": "s3" if args.s3 else "llm2llm", "n_per_error": teacher.n_per_error,
               "max_tries": teacher.max_tries, "results": results,
               "yield_ratio_constrained_vs_not": round(on["yield"] / off["yield"], 2)
               if off["yield"] else None,
               # what a round's wall time buys: a higher yield can cost more per token
               "accepted_per_minute_ratio_constrained_vs_not":
               round(on["accepted_per_minute"] / off["accepted_per_minute"], 2)
               if off["accepted_per_minute"] else None}
    report(summary, args.json)


if __name__ == "__main__":
    main()
