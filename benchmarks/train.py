"""Student training through the engine's trainer (Ray Train + DeepSpeed) under several
settings, against a bare single-process PyTorch loop on the same model, rows and steps, in one
run.

    python -m benchmarks.train --task trec --rows 55 --json results/train.json
    python -m benchmarks.train --student encoder --task trec --rows 55 --epochs 20

`--student encoder` trains the bundled MiniLM classifier (`student.kind:
sequence_classification`) the same way; benchmarks/train_gpu.py is the GPU counterpart.

The rows are a task's seed rows as the train stage builds them; each variant trains the
bundled student for `--epochs` epochs at `--batch` rows per optimizer step (split over the
workers), so every variant does the same arithmetic. Per variant: training tokens/s in the
step loop (`ratio`: against the bare loop), the start-up and save time around it, and the
round's wall time against the bare loop's: what the distribution, ZeRO and checkpoint
machinery cost on this machine; and each worker's peak resident memory. With both
ray_2w_zero0 and ray_2w_zero0_lora, `lora_vs_full` sets the LoRA student's round against
full fine-tuning's (same rows, steps and learning rate).

`--repeats N` runs the whole comparison N times, the bare loop and the variants in turn (Ray
started for the variants and shut down before the next bare loop, so the bare loop always has
the machine to itself), and reports each variant's ratio per repeat and their median: on 2
cores one run's ratio moves by several points with what else the machine is doing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from benchmarks import report
from benchmarks.teacher_yield import task_config
from engine.backends.train_data import (build_features, collate, collate_encoder,
                                        encoder_features, epoch_batches)
from engine.config import DEFAULT_ENCODER, LoraConfig, TrainConfig
from engine.local_ray import init_local
from engine.models import DEFAULT_MODEL, resolve_model
from engine.tasks import build_task

VARIANTS = {
    # name: TrainConfig overrides (train.batch_size is split over the workers: every variant
    # takes --batch rows a step)
    "defaults": {},  # what a run on this machine trains with (printed as `chosen`)
    "ray_2w_zero2_ckpt_epoch": {"num_workers": 2, "zero_stage": 2, "checkpoint_every": "epoch"},
    "ray_2w_zero2": {"num_workers": 2, "zero_stage": 2, "checkpoint_every": "never"},
    "ray_2w_zero0": {"num_workers": 2, "zero_stage": 0, "checkpoint_every": "never"},
    "ray_1w_zero0": {"num_workers": 1, "zero_stage": 0, "checkpoint_every": "never"},
    # a LoRA adapter (student.lora, rank 16) in place of every weight: set against ray_2w_zero0
    "ray_2w_zero0_lora": {"num_workers": 2, "zero_stage": 0, "checkpoint_every": "never",
                          "lora": {"rank": 16}},
}


def examples_for(task_name: str, n_rows: int) -> tuple[pa.Table, list[str]]:
    """(the rows as the train stage hands them over, the task's labels)."""
    task = build_task(task_config(task_name, n_rows), 0)
    rows, _ = task.seed_and_test()
    return pa.table({"messages": [json.dumps(task.student_messages(r["input"])) for r in rows],
                     "target": [r["target"] for r in rows],
                     "input": [r["input"] for r in rows],
                     "label": [r["label"] for r in rows]}), list(task.labels)


def plain_loop(examples: pa.Table, model_dir: str, cfg: TrainConfig, batch: int,
               seed: int, labels: list[str] | None = None) -> dict:
    """The same steps with no Ray, no DeepSpeed (the same optimizer, clipping and batches,
    in one process using every core): the floor for this machine. With `labels`,
    the encoder student: a classifier head over them, as the trainer builds it."""
    import torch
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification,
                              AutoTokenizer)

    start = time.time()
    tok = AutoTokenizer.from_pretrained(model_dir)
    features = []
    if labels:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, dtype=torch.float32, num_labels=len(labels))
        for row in examples.to_pylist():
            features.append(encoder_features(tok(row["input"])["input_ids"],
                                             labels.index(row["label"]), cfg.max_seq_len,
                                             tok.sep_token_id))
        collate_batch = collate_encoder
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        for row in examples.to_pylist():
            prompt = tok.apply_chat_template(json.loads(row["messages"]), tokenize=False,
                                             add_generation_prompt=True)
            features.append(build_features(
                tok(prompt, add_special_tokens=False)["input_ids"],
                tok(row["target"], add_special_tokens=False)["input_ids"],
                tok.eos_token_id, cfg.max_seq_len))
        collate_batch = collate
    # in training mode, as the trainer runs it (from_pretrained returns a model in eval mode:
    # no dropout, which made MiniLM's bare step 7% cheaper than the trainer's)
    model.train()
    # the trainer's arithmetic on CPU: fused AdamW, gradients clipped at 1.0
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, fused=True)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    steps = epoch_batches(len(features), batch, cfg.epochs, seed)
    t0, tokens = time.time(), 0
    for idx in steps:
        batch = {k: torch.tensor(v)
                 for k, v in collate_batch([features[i] for i in idx], pad).items()}
        out = model(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        tokens += int(batch["attention_mask"].sum())
    seconds = time.time() - t0
    return {"steps": len(steps), "tokens_per_s": round(tokens / seconds, 1),
            "train_seconds": round(seconds, 1), "wall_seconds": round(time.time() - start, 1)}


def compare_once(examples: pa.Table, labels: list[str], model_dir: str, encoder: bool,
                 names: list[str], base_settings: dict, batch: int) -> dict:
    """The bare loop, then each variant through the engine's trainer (Ray up only for
    these): tokens/s, and `ratio` against this run's bare loop."""
    import ray

    from engine.backends.deepspeed_trainer import RayDeepSpeedTrainer

    run = {"plain_torch": plain_loop(examples, model_dir, TrainConfig(**base_settings), batch,
                                     0, labels if encoder else None)}
    plain = run["plain_torch"]
    # As the engine starts it (engine/job.py), the dashboard on: Ray Train's placement-group
    # cleaner polls the state API it serves each second, and without it fails and warns.
    init_local(max(2, batch))
    try:
        for name in names:
            overrides = dict(VARIANTS[name])
            lora = LoraConfig(**overrides.pop("lora")) if "lora" in overrides else None
            cfg = TrainConfig(**{**base_settings, **overrides})
            with tempfile.TemporaryDirectory() as out:
                trainer = RayDeepSpeedTrainer(cfg, log=lambda *_: None, lora=lora, kind=(
                    "sequence_classification" if encoder else "causal_lm"))
                stats = trainer(examples, model_dir, str(Path(out) / "model"), "bench", 0,
                                labels=labels)
            # every rank trains on as many rows as rank 0 (equal shards)
            rate = stats["tokens_rank0"] * stats["world_size"] / stats["train_seconds"]
            run[name] = {"steps": stats["steps"], "tokens_per_s": round(rate, 1),
                         "ratio": round(rate / plain["tokens_per_s"], 3),
                         "train_seconds": round(stats["train_seconds"], 1),
                         "startup_and_save_seconds": round(stats["wall_seconds"]
                                                           - stats["train_seconds"], 1),
                         "wall_vs_plain": round(stats["wall_seconds"] / plain["wall_seconds"],
                                                2),
                         "wall_seconds": round(stats["wall_seconds"], 1),
                         "peak_rss_gb": stats.get("peak_rss_gb")}
            if cfg.chosen:
                run[name]["chosen"] = cfg.chosen
            print(name, run[name], flush=True)
    finally:
        ray.shutdown()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="causal", choices=["causal", "encoder"],
                        help="the bundled causal student (SmolLM2-135M) or the encoder "
                             "classifier (MiniLM; a classification task)")
    parser.add_argument("--task", default="trec")
    parser.add_argument("--rows", type=int, default=55)
    parser.add_argument("--batch", type=int, default=8, help="rows per optimizer step")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the bare loop and the variants this many times in turn; "
                             "each variant's `ratio` is then the median over the repeats")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")

    encoder = args.student == "encoder"
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    if encoder and any("lora" in VARIANTS[n] for n in names):  # as student.lora refuses it
        parser.error("the encoder student trains every weight: drop the _lora variants")
    examples, labels = examples_for(args.task, args.rows)
    model_dir = resolve_model(DEFAULT_ENCODER if encoder else DEFAULT_MODEL)
    base_settings = {"epochs": args.epochs, "batch_size": args.batch}
    runs = []
    for i in range(args.repeats):
        if args.repeats > 1:
            print(f"repeat {i + 1} of {args.repeats}", flush=True)
        runs.append(compare_once(examples, labels, model_dir, encoder, names, base_settings,
                                 args.batch))
    # the first run's figures, with each variant's ratio the median over the repeats
    result = {"student": args.student, "task": args.task, "rows": examples.num_rows,
              "global_batch": args.batch, "epochs": args.epochs, "repeats": args.repeats,
              **runs[0]}
    for name in names:
        ratios = [run[name]["ratio"] for run in runs]
        result[name] = {**runs[0][name], "ratio": round(statistics.median(ratios), 3),
                        "ratios": ratios}
        if args.repeats > 1:
            print(f"{name}: ratio {result[name]['ratio']} (median of {ratios})", flush=True)
    if args.repeats > 1:
        result["runs"] = runs
    full, lora = result.get("ray_2w_zero0"), result.get("ray_2w_zero0_lora")
    if full and lora:
        result["lora_vs_full"] = {key: round(lora[key] / full[key], 3) for key in
                                  ("wall_seconds", "train_seconds", "peak_rss_gb")}
        print("lora_vs_full", result["lora_vs_full"], flush=True)
    report(result, args.json)


if __name__ == "__main__":
    main()
