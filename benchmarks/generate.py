"""Generation throughput: the engine's pipeline against plain `vllm.LLM.chat`, same work.

    python -m benchmarks.generate --json results/generate.json

Both sides get the same prompts (GSM8K test questions in the student's chat format: a shared
system prompt and one-shot example, then the question), the same model, engine settings and
sampling parameters, with a fixed output length (`ignore_eos`), so both generate exactly the
same number of tokens. Throughput is completion tokens per second of generation; engine
start-up is timed separately on both sides and reported, not counted (the engine keeps its
teacher replicas warm across stages, so start-up is paid once per job, not per stage).

`--stop-at-eos` lets each answer end where the model ends it (real work: rows of different
lengths, where a block answered by one `LLM.chat` call waits for its longest row); the two
sides may then differ by a few tokens (greedy decoding in batches of different make-up), and
tokens/s is compared as is.

`--tasks N` splits the prompts between N tasks whose calls run at once through the one pool, as
tasks side by side do (engine/driver.py), and reports each task's seconds and `fairness`, the
slowest task's tokens/s over the fastest's (1.0: the engine shared evenly).

`--repeats N` runs both sides N times in turn (plain, engine, plain, ...; engines started
afresh each time) and reports each repeat's ratio and, as `ratio`, their median: on a small
machine one side's speed moves by several percent from run to run with what else the machine
is doing, and taking turns spreads that over both sides.

Threads: Ray sets OMP_NUM_THREADS to a replica's CPU count (`cpus_per_replica`), and on a small
CPU machine that alone changes vLLM's speed (measured here: plain vLLM went from 89 s to 72 s
for the default workload with OMP_NUM_THREADS=1 on 2 cores). The plain run gets the same
setting, so the ratio compares the pipelines, not the thread counts.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from pathlib import Path

import pyarrow as pa

from benchmarks import report
from engine.config import GenerationConfig, TaskConfig
from engine.generation.backend import build_generator
from engine.generation.vllm_replicas import engine_kwargs
from engine.local_ray import init_local
from engine.models import resolve_model
from engine.sampling import sampling_params, to_json
from engine.tasks import build_task

GSM8K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"


def prompts(n: int) -> list[list[dict]]:
    test = GSM8K / "test.jsonl"
    if not test.is_file():
        raise SystemExit(f"GSM8K test data not found at {test}; pass --data DIR holding "
                         "train.jsonl and test.jsonl")
    task = build_task(TaskConfig(name="gsm8k", n_seed=1, n_test=n,
                                 data={"train": str(GSM8K / "train.jsonl"), "test": str(test)}),
                      seed=0)
    _, rows = task.seed_and_test()
    if len(rows) < n:
        raise SystemExit(f"only {len(rows)} test questions in {test}; lower --prompts")
    return [task.student_messages(r["input"]) for r in rows]


def run_plain_vllm(model: str, cfg: GenerationConfig, conversations: list, seed: int) -> dict:
    from vllm import LLM, SamplingParams

    start = time.perf_counter()
    llm = LLM(model=model, seed=seed, **engine_kwargs(cfg))
    startup = time.perf_counter() - start
    start = time.perf_counter()
    outputs = llm.chat(conversations, SamplingParams(**sampling_params(cfg)), use_tqdm=False)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    llm.llm_engine.engine_core.shutdown()  # free the cores before the engine's run
    del llm
    gc.collect()
    return {"startup_s": startup, "seconds": seconds, "tokens": tokens}


def run_engine(model: str, cfg: GenerationConfig, conversations: list, seed: int,
               tasks: int = 1) -> dict:
    import ray
    from concurrent.futures import ThreadPoolExecutor

    init_local(include_dashboard=False)  # the engine's local instance (engine/local_ray.py)
    pipeline = build_generator(cfg, seed, cache=None, log=lambda m: print(m, flush=True))
    requests = pa.table({"request_id": [f"q{i}" for i in range(len(conversations))],
                         "messages": [json.dumps(c) for c in conversations],
                         "sampling": [to_json(sampling_params(cfg))] * len(conversations)})
    start = time.perf_counter()
    pipeline.warm_up(model)
    startup = time.perf_counter() - start
    start, started = time.perf_counter(), time.time()

    def task(k: int) -> tuple[pa.Table, float]:  # every tasks-th prompt, from the k-th
        rows = requests.take(list(range(k, requests.num_rows, tasks)))
        out = pipeline(rows, model, f"task {k}")
        return out, time.perf_counter() - start

    with ThreadPoolExecutor(tasks) as pool:
        done = list(pool.map(task, range(tasks)))
    seconds = time.perf_counter() - start
    out = pa.concat_tables([o for o, _ in done])
    infos = ray.get([r.info.remote() for r in pipeline.backend.pool.replicas])
    busy = sum(i["busy_s"] for i in infos)
    # from the call to the first engine step: the pipeline's own start (Ray Data, clients)
    first = min((i["first_step_at"] for i in infos if i["first_step_at"]), default=started) \
        - started
    errors = [e for e in out.column("error").to_pylist() if e]
    if errors:
        raise SystemExit(f"{len(errors)} rows failed in the engine's pipeline: {errors[0]}")
    pipeline.shutdown()
    ray.shutdown()
    return {"startup_s": startup, "seconds": seconds, "replica_busy_s": busy,
            "first_step_s": first,
            "tokens": sum(out.column("completion_tokens").to_pylist()),
            "task_seconds": [round(s, 2) for _, s in done],
            "task_tokens": [sum(o.column("completion_tokens").to_pylist()) for o, _ in done]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop-at-eos", action="store_true",
                        help="answers end at the model's end token (not a fixed length)")
    parser.add_argument("--tasks", type=int, default=1,
                        help="split the prompts between this many tasks generating at once")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run both sides this many times in turn; `ratio` is the median")

    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")

    model = resolve_model(args.model)
    cfg = GenerationConfig(model=args.model, replicas=args.replicas, temperature=0.0,
                           max_tokens=args.max_tokens, ignore_eos=not args.stop_at_eos,
                           keep_warm=True, max_num_seqs=args.max_num_seqs,
                           batch_size=args.max_num_seqs)
    conversations = prompts(args.prompts)
    threads = str(max(1, int(cfg.cpus_per_replica)))
    os.environ["OMP_NUM_THREADS"] = threads  # as Ray sets it for a replica; see the docstring
    print(f"{len(conversations)} prompts x {args.max_tokens} tokens, {args.model}", flush=True)
    runs = []
    for i in range(args.repeats):
        if args.repeats > 1:
            print(f"repeat {i + 1} of {args.repeats}", flush=True)
        runs.append(compare_once(args, model, cfg, conversations, threads))
    # the first repeat's figures, with `ratio` the median over the repeats
    result = {**runs[0], "ratio": round(statistics.median(r["ratio"] for r in runs), 3)}
    if args.repeats > 1:
        result.update(repeats=args.repeats, ratios=[r["ratio"] for r in runs], runs=runs)
    report(result, args.json)


def compare_once(args, model: str, cfg: GenerationConfig, conversations: list,
                 threads: str) -> dict:
    """Plain vLLM, then the engine's pipeline, on the same prompts; `ratio` of their
    tokens/s."""
    plain = run_plain_vllm(model, cfg, conversations, args.seed)
    print(f"plain vLLM: {plain}", flush=True)
    engine = run_engine(model, cfg, conversations, args.seed, args.tasks)
    print(f"engine:     {engine}", flush=True)
    if engine["tokens"] != plain["tokens"] and not args.stop_at_eos:
        raise SystemExit(f"token counts differ (engine {engine['tokens']}, vLLM "
                         f"{plain['tokens']}): the two runs did not do the same work")
    result = {
        "model": args.model, "prompts": len(conversations), "max_tokens": args.max_tokens,
        "max_num_seqs": args.max_num_seqs, "replicas": args.replicas, "tasks": args.tasks,
        "cpu_count": os.cpu_count(), "omp_num_threads": int(threads), "tokens": plain["tokens"],
        "engine_tokens": engine["tokens"], "stop_at_eos": args.stop_at_eos,
        "engine_tokens_per_s": round(engine["tokens"] / engine["seconds"], 2),
        "vllm_tokens_per_s": round(plain["tokens"] / plain["seconds"], 2),
        "engine_seconds": round(engine["seconds"], 2), "vllm_seconds": round(plain["seconds"], 2),
        "engine_startup_s": round(engine["startup_s"], 2),
        "vllm_startup_s": round(plain["startup_s"], 2),
        # time the replicas' engines spent stepping, over the pipeline's wall time: below 1,
        # the engines waited for work (Ray Data scheduling, transfers, rendering prompts)
        "replica_busy_fraction": round(engine["replica_busy_s"] / args.replicas
                                       / engine["seconds"], 3),
        "engine_first_step_s": round(engine["first_step_s"], 2),
    }
    result["ratio"] = round(result["engine_tokens_per_s"] / result["vllm_tokens_per_s"], 3)
    if args.tasks > 1:
        rates = [t / s for t, s in zip(engine["task_tokens"], engine["task_seconds"])]
        result["task_seconds"] = engine["task_seconds"]
        result["fairness"] = round(min(rates) / max(rates), 3)
    print(f"ratio {result['ratio']}", flush=True)
    return result


if __name__ == "__main__":
    main()
