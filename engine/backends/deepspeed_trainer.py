"""Student fine-tuning: Ray Train TorchTrainer + DeepSpeed ZeRO, from the base model each round.

The driver hands over rows with the student's chat messages and target (a causal LM learns the
target after its prompt) and the raw input and label (an encoder student, `student.kind:
sequence_classification`, learns the label's index with a classifier head); each worker
tokenises its Ray Data shard, trains, and rank 0 reports the saved HF folder as a Ray Train
checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import resource
import tempfile
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path

import pyarrow as pa

from engine import fs
from engine.backends.core_share import CoreShare
from engine.backends.epoch_select import EpochSelector, epoch_ends, validation_score
from engine.backends.lora import base_of, save_adapter, trainable, with_adapter
from engine.backends.train_data import (build_features, checkpoint_steps, collate,
                                        collate_encoder, encoder_features, epoch_batches)
from engine.config import LoraConfig, TrainConfig
from engine.console import QueueLog, eta
from engine.errors import PlacementError, StageError
from engine.models import parameter_count
from engine.placement import train_bundle
from engine.records import require_columns
from engine.storage import RESUME_DIR


def deepspeed_config(cfg: TrainConfig, total_steps: int, use_gpu: bool) -> dict:
    warmup = _warmup_steps(cfg, total_steps)
    config = {
        "train_micro_batch_size_per_gpu": cfg.worker_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.precision == "bf16"},
        # torch AdamW on CPU: DeepSpeed's fused Adam needs CUDA, its CPU Adam a compile step.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if cfg.schedule == "linear":  # cosine: a torch scheduler (cosine_schedule)
        config["scheduler"] = _linear_schedule(cfg, total_steps, warmup)
    if use_gpu:
        config["optimizer"] = {"type": "AdamW", "params": {
            "lr": cfg.lr, "weight_decay": cfg.weight_decay}}
    return config


def _linear_schedule(cfg: TrainConfig, total_steps: int, warmup: int) -> dict:
    """DeepSpeed's WarmupDecayLR: a linear warm-up, then a linear decay to the warm-up's first
    rate, lr / (warm-up steps + 1). It warms up over at least 2 steps, its first two at
    warmup_min_lr: with a min of 0, a short run (a small seed set is a handful of steps) spent
    them at lr 0. So the warm-up starts above 0, and a run too short to warm up trains at a
    constant lr."""
    return {"type": "WarmupDecayLR", "params": {
        "total_num_steps": max(total_steps, warmup + 2),
        "warmup_num_steps": max(warmup, 2), "warmup_type": "linear",
        "warmup_min_lr": cfg.lr / (warmup + 1) if warmup else cfg.lr,
        "warmup_max_lr": cfg.lr}}


def cosine_schedule(cfg: TrainConfig, total_steps: int):
    """`train.schedule: cosine` (the LLM2LLM reference code's): a linear warm-up, then a
    cosine decay that reaches 0 just after the last step, as a function of the optimizer that
    deepspeed.initialize calls. Not DeepSpeed's WarmupCosineLR: it sets the rate to 0 for the
    first step, and needs a warm-up of a step or more."""
    import torch

    warmup = _warmup_steps(cfg, total_steps)

    def factor(step: int) -> float:  # of cfg.lr, for optimizer step `step` (from 0)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup + 1) / (total_steps - warmup + 1)))

    return lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    warmup = int(total_steps * cfg.warmup_ratio)
    return warmup if warmup >= 2 else 0  # DeepSpeed cannot warm up in fewer than 2 steps


# Names inside a Ray Train checkpoint. A mid-round checkpoint holds DeepSpeed's state (model,
# optimizer and LR-schedule shards, one optimizer file per rank) and PROGRESS; the final one
# holds the HF model folder and FINAL_STATS.
DEEPSPEED_TAG = "state"
PROGRESS = "progress.json"
FINAL_STATS = "train_stats.json"
BEST_EPOCH = "best_epoch.pt"  # select_epoch: validation, the best epoch's weights so far


def train_loop_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker. Heavy imports live here, never at module import.

    Starts from the latest checkpoint Ray Train hands over, if any: after a worker failure
    within the run, or when a re-run of the job finds the previous attempt's checkpoints.
    """
    entered = time.time()  # the worker's start: Ray Train's group, this process, its imports
    import ray.train
    import torch

    cfg = TrainConfig.model_validate(config["train"])
    config = {**config, "phases": {"start_s": entered - config["fit_started_at"]}}
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # On CPU the node's cores, shared with the other trainings on it (Ray pins OMP threads
    # to its logical CPUs, of which a local instance has more than the cores)
    with nullcontext() if cfg.use_gpu else CoreShare() as share:
        if share:
            torch.set_num_threads(share.threads())
        _train(config, cfg, rank, world, share.threads if share else None)


def _train(config: dict, cfg: TrainConfig, rank: int, world: int, threads) -> None:
    import ray.train
    import torch

    torch.manual_seed(config["seed"])

    checkpoint = ray.train.get_checkpoint()
    with ExitStack() as stack:  # a remote checkpoint is fetched once, kept until loaded
        ckpt_dir = Path(stack.enter_context(checkpoint.as_directory())) if checkpoint else None
        if ckpt_dir and (ckpt_dir / FINAL_STATS).is_file():
            # Trained to the end before the interruption: nothing to redo (its phases were
            # that attempt's; this one only started its workers)
            ray.train.report({**json.loads((ckpt_dir / FINAL_STATS).read_text()),
                              "phases": config["phases"]})
            return
        set_up_from = time.time()
        engine, tokenizer, features, batches, progress = _set_up(config, cfg, ckpt_dir)
        selector = _epoch_selector(config, cfg, rank, engine, tokenizer, ckpt_dir, progress)
        config["phases"]["set_up_s"] = time.time() - set_up_from  # imports, load, DeepSpeed
    # The job's console, if it has one (engine/console.py): rank 0 tells it about a resume,
    # and its step lines show as the stage's progress.
    console = QueueLog(config["console"]) if config.get("console") is not None else None
    unit = config.get("unit", "student")
    if ckpt_dir and rank == 0:
        (console or print)(f"[train] {unit}: resuming at step {progress['step']}/"
                           f"{len(batches)} from the last checkpoint")
    save_after = set(checkpoint_steps(len(batches), math.ceil(len(features) / cfg.worker_batch),
                                      cfg.grad_accum, cfg.checkpoint_every))
    pad_id = _pad_id(tokenizer)
    report = (lambda message: console.progress(f"{unit} train", message)) \
        if console and rank == 0 else (lambda message: None)
    steps_from = time.time()
    stats = _run_steps(engine, features, batches, pad_id, cfg, rank, progress, save_after,
                       report, collate_encoder if _is_encoder(config) else collate, threads,
                       selector)
    config["phases"]["train_s"] = time.time() - steps_from  # this attempt's steps alone
    if selector:  # the best epoch's weights are the round's student
        selector.restore(engine.module)
        stats.update(selector.stats())
    _save_and_report(engine, tokenizer, cfg, rank,
                     {**stats, "world_size": world, "phases": config["phases"]},
                     to_bf16=not _is_encoder(config),
                     adapter_over=base_of(config["base_model"]) if config.get("lora") else None)


def _is_encoder(config: dict) -> bool:
    return config.get("kind") == "sequence_classification"


def cpu_worker_env() -> dict:
    """A CPU train worker's environment. Its OpenMP threads (torch's libgomp) spin only
    briefly before they sleep when they wait: with other work on the node (a teacher's
    engine, a training that has not yet seen this one's share) libgomp's default spinning
    took 8 to 16x as long as running alone (three 2-thread MiniLM trainings on 2 cores); at
    10,000 spins 3.7 to 5.8x, and one training alone lost nothing (sleeping at once, as
    OMP_WAIT_POLICY=PASSIVE does, cost it 45%)."""
    return {"env_vars": {"GOMP_SPINCOUNT": "10000"}}


STALE_BUILD_LOCK_S = 600  # compiling DeepSpeed's CPU communication op takes about a minute


def clear_stale_build_locks(now: float | None = None) -> list[str]:
    """Remove torch extension build locks older than STALE_BUILD_LOCK_S. A process killed while
    compiling an op (DeepSpeed builds its CPU shared-memory op on first use) leaves its lock
    behind, and every later training would wait on it forever."""
    from torch.utils.cpp_extension import get_default_build_root

    own = os.environ.get("TORCH_EXTENSIONS_DIR")  # <dir>/<op>/lock
    locks = Path(own).glob("*/lock") if own else \
        Path(get_default_build_root()).glob("*/*/lock")  # <root>/py311_cpu/<op>/lock
    removed = []
    for lock in locks:
        try:
            if (now or time.time()) - lock.stat().st_mtime > STALE_BUILD_LOCK_S:
                lock.unlink()
                removed.append(str(lock))
        except FileNotFoundError:  # another worker removed it first
            pass
    return removed


def import_deepspeed():
    """`import deepspeed`, without the mlflow its autotuner imports when it is installed (the
    engine's tracking installs mlflow-skinny): 2.7 s of a 6.5 s import on this 2-core machine,
    paid by every training worker of every round, for autotuning results training never
    logs. Where this process has imported mlflow already, it is left as it is."""
    import sys

    blocked = "mlflow" not in sys.modules
    if blocked:
        sys.modules["mlflow"] = None  # `import mlflow` raises ImportError; DeepSpeed skips it
    try:
        import deepspeed
    finally:
        if blocked and sys.modules.get("mlflow", 0) is None:
            del sys.modules["mlflow"]  # a later `import mlflow` in this process still works
    return deepspeed


def _set_up(config: dict, cfg: TrainConfig, ckpt_dir: Path | None):
    """Tokenised shard, batch order, DeepSpeed engine; with a checkpoint, its state loaded.
    Returns (engine, tokenizer, features, batches, progress)."""
    import ray.train
    import torch
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification,
                              AutoTokenizer)

    # a LoRA round loads the full base model under its adapter (a continued one: under the
    # previous round's adapter)
    model_folder = base_of(config["base_model"])
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    features = _tokenise(config, cfg, tokenizer, "train")
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    if _is_encoder(config):  # a classifier head over the task's labels, in their order
        labels = list(config["labels"])
        model = AutoModelForSequenceClassification.from_pretrained(
            config["base_model"], dtype=dtype, num_labels=len(labels),
            id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    else:
        model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=dtype)
        if config.get("lora"):
            model = with_adapter(model, config["lora"], config["base_model"])
    batches = epoch_batches(len(features), cfg.worker_batch, cfg.epochs, config["seed"])
    total_steps = max(1, len(batches) // cfg.grad_accum)

    for lock in clear_stale_build_locks():
        print(f"[train] removed a stale build lock left by a killed process: {lock}", flush=True)
    params = trainable(model)  # under LoRA, the adapter's alone
    # On CPU torch's fused AdamW: one kernel over all parameters, where the default updates
    # them one by one (the optimizer step was 37% of a MiniLM step; fused, 6%).
    client_opt = None if cfg.use_gpu else torch.optim.AdamW(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    engine, *_ = import_deepspeed().initialize(
        model=model, optimizer=client_opt, model_parameters=None if client_opt else params,
        config=deepspeed_config(cfg, total_steps, cfg.use_gpu),
        lr_scheduler=cosine_schedule(cfg, total_steps) if cfg.schedule == "cosine" else None)
    if ray.train.get_context().get_world_size() == 1 and cfg.zero_stage == 0:
        # One worker has no gradients to average: DeepSpeed would still flatten them into a
        # buffer, "all-reduce" it with itself and copy it back each step (15% of a MiniLM step)
        engine.enable_backward_allreduce = False
    if not (cfg.use_gpu or engine.fp16_enabled() or engine.bfloat16_enabled()
            or engine.zero_optimization()):
        use_torch_clip_and_zero_grad(engine, params)

    progress = {"step": 0, "losses": [], "tokens": 0, "seconds": 0.0}
    if ckpt_dir:
        engine.load_checkpoint(str(ckpt_dir), tag=DEEPSPEED_TAG)
        progress = json.loads((ckpt_dir / PROGRESS).read_text())
    return engine, tokenizer, features, batches, progress


def use_torch_clip_and_zero_grad(engine, params: list) -> None:
    """On CPU with fp32 weights and no ZeRO, DeepSpeed clips the gradients and clears them
    itself, walking every parameter in Python (`deepspeed.runtime.utils.clip_grad_norm_`,
    `named_parameters()` each step): 7% of a MiniLM step. torch's `clip_grad_norm_` is the
    same arithmetic (one global 2-norm, scaled by max_norm / (norm + 1e-6) when above it)
    and the trainable parameters are known once, so the engine's two methods are replaced.
    Only this path: ZeRO, fp16 and bf16 clip inside their own optimizers."""
    import torch

    # DeepSpeed's names for the two steps (0.19): one that renamed them would go unnoticed
    assert callable(engine.clip_fp32_gradients) and callable(engine.zero_grad)
    max_norm = engine.gradient_clipping()

    def clip_fp32_gradients() -> None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    def zero_grad() -> None:  # the frozen parameters never have a gradient
        for param in params:
            param.grad = None

    engine.clip_fp32_gradients, engine.zero_grad = clip_fp32_gradients, zero_grad


def _epoch_selector(config: dict, cfg: TrainConfig, rank: int, engine, tokenizer,
                    ckpt_dir: Path | None, progress: dict) -> EpochSelector | None:
    """`train.select_epoch: validation`, on rank 0 (which saves the student): the selector
    over the validation rows, with the scores and best weights of a resumed run's epochs."""
    if cfg.select_epoch != "validation" or rank != 0:
        return None
    import torch

    features = _tokenise(config, cfg, tokenizer, "validation")
    selector = EpochSelector(lambda: validation_score(
        engine.module, features, collate_encoder if _is_encoder(config) else collate,
        _pad_id(tokenizer), _is_encoder(config)))
    if ckpt_dir and (ckpt_dir / BEST_EPOCH).is_file():  # epochs scored before the interruption
        selector.scores = list(progress.get("epoch_scores", []))
        selector.best_epoch = progress.get("chosen_epoch")
        selector.best_state = torch.load(ckpt_dir / BEST_EPOCH, map_location="cpu")
    return selector


def _tokenise(config: dict, cfg: TrainConfig, tokenizer, dataset: str) -> list[dict]:
    """This worker's rows of a Ray Train dataset (its shard of `train`, all of
    `validation`) as the student's features."""
    import ray.train

    rows = ray.train.get_dataset_shard(dataset).iter_rows()
    if _is_encoder(config):  # a label's index in the task's labels, in their order
        labels = list(config["labels"])
        return [encoder_features(
            tokenizer(r["input"], add_special_tokens=True)["input_ids"],
            labels.index(r["label"]), cfg.max_seq_len, tokenizer.sep_token_id) for r in rows]
    return [_features(tokenizer, r, cfg.max_seq_len) for r in rows]


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _features(tokenizer, row: dict, max_len: int) -> dict:
    messages = json.loads(row["messages"])
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(row["target"], add_special_tokens=False)["input_ids"]
    return build_features(prompt_ids, target_ids, tokenizer.eos_token_id, max_len)


def _run_steps(engine, features, batches, pad_id, cfg: TrainConfig, rank: int,
               progress: dict, save_after: set[int], report=lambda message: None,
               collate_batch=collate, threads=None, selector=None) -> dict:
    """Train from micro-step progress["step"] to the end. The batch order is a pure function
    of the seed, so a resumed run sees exactly the batches an uninterrupted one would.
    `threads`: on CPU, how many threads to use now (trainings on the node come and go).
    `selector`: scores the model at each epoch's end (train.select_epoch: validation)."""
    import torch

    engine.train()
    # every rank stops at the same step when rank 0's selector says so (train.patience)
    stops = cfg.patience is not None and cfg.select_epoch == "validation"
    ends = set(epoch_ends(len(batches), math.ceil(len(features) / cfg.worker_batch))) \
        if selector or stops else set()
    first, tokens, losses = progress["step"], progress["tokens"], progress["losses"]
    t0, stopped_after = time.time(), None
    step = first
    for step in range(first + 1, len(batches) + 1):
        if threads and threads() != torch.get_num_threads():
            torch.set_num_threads(threads())
        idx = batches[step - 1]
        batch = {k: torch.tensor(v, device=engine.device)
                 for k, v in collate_batch([features[i] for i in idx], pad_id).items()}
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        tokens += int(batch["attention_mask"].sum())
        losses.append(float(loss.detach()))
        if rank == 0 and (step % cfg.log_every == 0 or step == len(batches)):
            seconds = time.time() - t0
            rate = (tokens - progress["tokens"]) / seconds
            print(f"[train] step {step}/{len(batches)} loss {losses[-1]:.4f} "
                  f"({rate:.0f} tokens/s on rank 0)", flush=True)
            report(f"step {step}/{len(batches)}, loss {losses[-1]:.4f}, {rate:.0f} tokens/s "
                   f"on rank 0 {eta(step - first, len(batches) - first, seconds)}")
        if step in ends:
            if selector:
                score = selector.epoch_end(engine.module)
                print(f"[train] epoch {len(selector.scores)}: validation score {score:.4f} "
                      f"(best: epoch {selector.best_epoch})", flush=True)
            if stops and _on_every_rank(bool(selector and selector.should_stop(cfg.patience)),
                                        engine.device):
                stopped_after = sum(1 for end in ends if end <= step)
                print(f"[train] no better validation score for {cfg.patience} epochs: "
                      f"stopping after epoch {stopped_after}", flush=True)
                break
        if step in save_after:
            _save_checkpoint(engine, rank, {"step": step, "losses": losses, "tokens": tokens,
                                            "seconds": progress["seconds"] + time.time() - t0,
                                            **(selector.stats() if selector else {})},
                             selector)
    return {"steps": step, "final_loss": losses[-1], "tokens_rank0": tokens,
            **({"stopped_after_epoch": stopped_after} if stopped_after else {}),
            "train_seconds": progress["seconds"] + time.time() - t0, "resumed_at_step": first,
            # the worker process's peak resident memory (model, optimizer state, activations)
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 3),
            "loss_curve": losses}


def _on_every_rank(flag: bool, device) -> bool:
    """Rank 0's `flag` on every rank of a multi-worker training (the others do not score
    epochs), so they all leave the step loop at the same step; the flag itself on one.
    `device`: the training's (NCCL broadcasts GPU tensors only)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def _save_checkpoint(engine, rank: int, progress: dict, selector=None) -> None:
    """Every rank saves its DeepSpeed shards and reports them; Ray Train gathers the ranks'
    files into one checkpoint folder in the run's storage and keeps the latest. With an
    epoch selector, rank 0 adds the best epoch's weights so far."""
    import ray.train
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        engine.save_checkpoint(tmp, tag=DEEPSPEED_TAG)
        if rank == 0:
            (Path(tmp) / PROGRESS).write_text(json.dumps(progress))
            if selector is not None and selector.best_state is not None:
                torch.save(selector.best_state, Path(tmp) / BEST_EPOCH)
        ray.train.report({"step": progress["step"]},
                         checkpoint=ray.train.Checkpoint.from_directory(tmp))
    if rank == 0:
        print(f"[train] checkpoint at step {progress['step']}", flush=True)


def _save_and_report(engine, tokenizer, cfg: TrainConfig, rank: int, stats: dict,
                     to_bf16: bool = True, adapter_over: str | None = None) -> None:
    """Rank 0 saves the student (with `adapter_over`, a LoRA adapter over that base folder)
    and reports it as the run's final checkpoint."""
    import ray.train
    import torch

    # ZeRO-3 shards parameters: gather them (a collective every rank joins) before saving.
    state = engine._zero3_consolidated_16bit_state_dict() if cfg.zero_stage == 3 else None
    if rank != 0:
        ray.train.report(stats)
        return
    saving_from = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        module = engine.module
        if adapter_over is not None:  # the adapter alone, kept in fp32: it is small
            save_adapter(module, tmp, adapter_over, state)
        else:
            state = state if state is not None else module.state_dict()
            if to_bf16:  # halves disk and load time; vLLM serves a causal student in bf16
                state = {k: v.to(torch.bfloat16) for k, v in state.items()}
                module.config.dtype = torch.bfloat16
            module.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(tmp)  # an adapter too loads on its own (export, PEFT)
        stats["phases"] = {**stats.get("phases", {}), "save_s": time.time() - saving_from}
        (Path(tmp) / FINAL_STATS).write_text(json.dumps(stats))
        ray.train.report(stats, checkpoint=ray.train.Checkpoint.from_directory(tmp))


class RayDeepSpeedTrainer:
    """StudentTrainer: one Ray Train run per (unit, round), model saved to `out_dir`."""

    def __init__(self, cfg: TrainConfig, log=print, kind: str = "causal_lm",
                 lora: LoraConfig | None = None):
        self.cfg = cfg
        self.log = log
        self.kind = kind  # the student's kind (StudentConfig.kind)
        self.lora = lora  # StudentConfig.lora: train an adapter, not every weight

    def __call__(self, examples: pa.Table, base_model: str, out_dir: str, unit: str,
                 seed: int, labels: list[str] = (), validation: pa.Table | None = None) -> dict:
        import ray
        from ray.train import (CheckpointConfig, DataConfig, FailureConfig, RunConfig,
                               ScalingConfig)
        from ray.train.torch import TorchTrainer

        from engine.backends.train_placement import StopWhenNoRoom

        columns = ["input", "label"] if self.kind == "sequence_classification" \
            else ["messages", "target"]
        require_columns(examples, columns, "train")
        selecting = self.cfg.select_epoch == "validation"
        if selecting and (validation is None or validation.num_rows == 0):
            raise StageError("train", "train.select_epoch: validation needs validation rows; "
                                      "set tasks.<i>.n_validation or data.validation, or "
                                      "train.select_epoch: last")
        if examples.num_rows < self.cfg.num_workers:
            raise StageError("train", f"{examples.num_rows} rows cannot be split over "
                                      f"{self.cfg.num_workers} workers; lower train.num_workers")
        # out_dir is a local path or a filesystem URI: Ray Train writes to either.
        out_fs, out_path = fs.open_fs(out_dir)
        # Ray Train's storage, checkpoints included, lives in the stage's resume folder, which
        # outlives an interrupted attempt: a new TorchTrainer with the same name and storage
        # starts from the latest checkpoint found there.
        ray_path = fs.join(out_path.rsplit("/", 1)[0], RESUME_DIR, "ray_train")
        if fs.exists(out_fs, ray_path):
            self.log(f"[train] {unit}: resuming from the checkpoints in {ray_path}")
        bundle = train_bundle(self.cfg, parameter_count(base_of(base_model)),
                              lora=self.lora is not None)
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"train": self.cfg.model_dump(), "base_model": base_model,
                               "seed": seed, "unit": unit, "kind": self.kind,
                               "labels": list(labels),
                               "lora": self.lora.model_dump() if self.lora else None,
                               "console": getattr(self.log, "queue", None),
                               "fit_started_at": time.time()},
            scaling_config=ScalingConfig(
                num_workers=self.cfg.num_workers, use_gpu=self.cfg.use_gpu,
                # CPUs, a GPU, and on CPU the memory it will use: engine/placement.py
                resources_per_worker=bundle),
            run_config=RunConfig(
                name=f"train-{unit.replace('/', '-')}", storage_path=ray_path,
                storage_filesystem=None if fs.is_local(out_fs) else out_fs,
                failure_config=FailureConfig(max_failures=self.cfg.max_failures),
                callbacks=[StopWhenNoRoom(bundle, self.cfg.num_workers,
                                          self.cfg.placement_timeout_s)],
                worker_runtime_env=cpu_worker_env() if not self.cfg.use_gpu else None,
                checkpoint_config=CheckpointConfig(num_to_keep=1)),  # the latest is never deleted
            # from_blocks: no remote metadata task that needs a free CPU (see pipeline.py)
            datasets={"train": ray.data.from_blocks([examples.select(columns)]),
                      **({"validation": ray.data.from_blocks([validation.select(columns)])}
                         if selecting else {})},
            # every worker gets all the validation rows (rank 0 scores them); train is split
            dataset_config=DataConfig(datasets_to_split=["train"]),
        )
        start = time.time()
        try:
            result = trainer.fit()
        except Exception as exc:  # noqa: BLE001 - only the no-room case is translated
            failure = getattr(exc, "controller_failure", None)  # Ray Train's ControllerError
            if not isinstance(failure, PlacementError):
                raise
            raise StageError("train", f"{failure}; then run the same command again: it "
                                      f"resumes from the checkpoints in {ray_path}") from None
        reported = time.time()
        fs.delete(out_fs, out_path)
        fs.copy_tree(result.checkpoint.filesystem, result.checkpoint.path, out_fs, out_path)
        fs.delete(out_fs, ray_path)  # checkpoints, and a second copy of out_dir
        stats = {**(result.metrics or {}), "wall_seconds": time.time() - start}
        # where the wall time went (rank 0): the worker's start, set-up, the steps, the save,
        # the copy to out_dir; the rest is Ray Train's own (placement, reporting, shut-down)
        phases = {**stats.get("phases", {}), "copy_s": time.time() - reported}
        phases["other_s"] = stats["wall_seconds"] - sum(phases.values())
        stats["phases"] = {k: round(v, 2) for k, v in phases.items()}
        self.log(f"[train] {unit}: {stats.get('steps')} steps, final loss "
                 f"{stats.get('final_loss', float('nan')):.4f}, {stats['wall_seconds']:.0f}s "
                 f"({phases_line(stats['phases'])})")
        return stats


PHASE_NAMES = {"start_s": "workers starting", "set_up_s": "set-up", "train_s": "steps",
               "save_s": "save", "copy_s": "copy", "other_s": "Ray Train"}


def phases_line(phases: dict) -> str:
    """Where a training's wall time went, for its log line: "workers starting 16s, set-up
    14s, steps 0s, ..." (a finished training found on resume has fewer phases)."""
    return ", ".join(f"{PHASE_NAMES[k]} {phases[k]:.0f}s" for k in PHASE_NAMES if k in phases)
