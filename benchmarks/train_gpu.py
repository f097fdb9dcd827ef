"""Student training on one GPU: DeepSpeed (full fine-tuning, and a LoRA adapter through PEFT)
against a bare PyTorch loop on the same model, batches and steps, in one run. Needs only
torch, transformers, DeepSpeed and peft (no Ray, no vLLM, no engine import), so it runs on a
machine lent for an hour with none of the engine's stack:

    python -m benchmarks.train_gpu --sizes 135m,1b --json results/train_gpu.json
    python -m benchmarks.train_gpu --device cpu --sizes tiny --steps 4     # a check, anywhere

The models are built from their configs with random weights (the speed of a step does not
depend on the weights, and the machine needs no model download): `135m` has SmolLM2-135M's
shape, the engine's bundled student; `1b` Llama-3.2-1B's. The batches are random token ids of
`--seq` tokens, the loss on all of them. Per variant: tokens/s (after `--warmup` steps), peak
GPU memory, MFU (model FLOPs utilisation: 6 x parameters + attention per token, against the
GPU's dense bf16 peak) and `ratio` against the bare loop. The engine's trainer
(engine/backends/deepspeed_trainer.py) runs the same DeepSpeed step inside Ray Train;
benchmarks/train.py measures what Ray Train adds, on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

SHAPES = {
    # hidden, layers, heads, kv heads, intermediate, vocab
    "tiny": (64, 2, 2, 1, 128, 1024),
    "135m": (576, 30, 9, 3, 1536, 49152),  # SmolLM2-135M
    "1b": (2048, 16, 32, 8, 8192, 128256),  # Llama-3.2-1B
}
# Dense bf16 tensor-core peaks (TFLOP/s), by a substring of torch.cuda.get_device_name()
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}
VARIANTS = ("torch", "deepspeed", "deepspeed_lora")


def build_model(size: str, device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, kv, inter, vocab = SHAPES[size]
    config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, intermediate_size=inter, vocab_size=vocab,
                         tie_word_embeddings=True, max_position_embeddings=4096)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device=device, dtype=dtype), config


def flops_per_token(config, parameters: int, seq: int) -> float:
    """Training FLOPs per token: 6 per parameter (forward and backward), plus attention's
    scores and weighted sum (12 x layers x hidden x sequence length)."""
    return 6 * parameters + 12 * config.num_hidden_layers * config.hidden_size * seq


def step_loop(step, batches: list, warmup: int, device: str) -> tuple[float, int]:
    """(seconds, tokens) over the batches after the first `warmup`."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for batch in batches[:warmup]:
        step(batch)
    sync()
    start, tokens = time.perf_counter(), 0
    for batch in batches[warmup:]:
        step(batch)
        tokens += batch.numel()
    sync()
    return time.perf_counter() - start, tokens


def run_variant(name: str, size: str, args, batches: list) -> dict:
    import torch

    device = args.device
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    # mixed precision both ways: the bare loop keeps fp32 weights and runs its matmuls in
    # bf16 (autocast); DeepSpeed's bf16 keeps bf16 weights and an fp32 master copy
    bf16 = device == "cuda"
    dtype = torch.bfloat16 if bf16 and name != "torch" else torch.float32
    model, config = build_model(size, device, dtype)
    parameters = sum(p.numel() for p in model.parameters())
    if name == "deepspeed_lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=16, lora_alpha=32, task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                            "down_proj"]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=device == "cuda")
    if name == "torch":
        def step(batch):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    else:
        import deepspeed

        # the engine's settings on GPU (deepspeed_trainer.deepspeed_config), with torch's
        # fused AdamW: DeepSpeed's own compiles a CUDA op, which needs nvcc on the machine
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config={
            "train_micro_batch_size_per_gpu": args.batch, "gradient_accumulation_steps": 1,
            "gradient_clipping": 1.0, "zero_optimization": {"stage": args.zero_stage},
            "bf16": {"enabled": bf16}, "zero_allow_untested_optimizer": True,
            "steps_per_print": 10 ** 9})

        def step(batch):
            loss = engine(input_ids=batch, labels=batch).loss
            engine.backward(loss)
            engine.step()
    seconds, tokens = step_loop(step, batches, args.warmup, device)
    rate = tokens / seconds
    result = {"parameters": parameters, "trainable": sum(p.numel() for p in trainable),
              "tokens_per_s": round(rate, 1)}
    if device == "cuda":
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in torch.cuda.get_device_name()),
                    args.peak_tflops)
        if peak:  # LoRA skips the base's weight gradients: its MFU counts the full 6N anyway
            result["mfu"] = round(flops_per_token(config, parameters, args.seq) * rate
                                  / (peak * 1e12), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="135m,1b", help=f"of {', '.join(SHAPES)}")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--steps", type=int, default=30, help="measured steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--zero-stage", type=int, default=0, choices=[0, 1, 2])
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, for MFU "
                                                          "on a GPU not in PEAK_TFLOPS")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    # one process is the whole DeepSpeed world (no launcher)
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29531"}.items():
        os.environ.setdefault(key, value)
    result = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
              "torch": torch.__version__, "batch": args.batch, "seq": args.seq,
              "steps": args.steps, "zero_stage": args.zero_stage}
    for size in args.sizes.split(","):
        generator = torch.Generator().manual_seed(0)
        batches = [torch.randint(0, SHAPES[size][5], (args.batch, args.seq),
                                 generator=generator).to(args.device)
                   for _ in range(args.warmup + args.steps)]
        rows = {name: run_variant(name, size, args, batches)
                for name in args.variants.split(",")}
        base = rows.get("torch", {}).get("tokens_per_s")
        for name, row in rows.items():
            if base:
                row["ratio"] = round(row["tokens_per_s"] / base, 3)
            print(size, name, json.dumps(row), flush=True)
        result[size] = rows
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
