"""Training a LoRA student with PEFT, inside the DeepSpeed train loop (deepspeed_trainer.py).

The base model's weights stay frozen; only the adapter trains, and only the adapter is saved
(adapter_config.json + adapter_model.safetensors, a few MB where the model is hundreds). Each
round trains a new adapter from the base (LLM2LLM); `strategy.from_base: false` continues the
previous round's adapter instead. engine/adapters.py says how the adapter is served.
"""

from __future__ import annotations

from engine import fs
from engine.adapters import adapter_base, is_adapter
from engine.errors import StageError


def base_of(start_from: str) -> str:
    """The full model folder to load: `start_from` itself, or the base of an adapter (a
    continued LoRA round starts from the previous round's adapter)."""
    return adapter_base(start_from) if is_adapter(start_from) else start_from


def with_adapter(model, lora: dict, start_from: str):
    """`model` (the base, loaded) with a trainable adapter: a new one, or the one in
    `start_from` when it is an adapter folder."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if is_adapter(start_from):  # (a run_dir on remote storage: fetched to this node first)
        return PeftModel.from_pretrained(model, fs.localize(start_from), is_trainable=True)
    config = LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # PEFT: "Target modules {...} not found in the base model"
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                        if type(m).__name__ == "Linear"})
        raise StageError("train", f"student.lora.target_modules: {exc}; this model's linear "
                                  f"layers are named {names}") from None


def save_adapter(module, out: str, base_model: str, state: dict | None = None) -> None:
    """Write the adapter alone into folder `out`, naming `base_model` (the folder it was
    trained over) as its base. `state`: the whole model's gathered state dict under ZeRO-3
    (PEFT picks the adapter's tensors from it)."""
    for config in module.peft_config.values():
        config.base_model_name_or_path = base_model
    module.save_pretrained(out, **({"state_dict": state} if state is not None else {}))


def trainable(model) -> list:
    """The parameters the optimizer updates: all of a fully fine-tuned model's, an adapter's
    own under LoRA (the frozen base needs no optimizer state)."""
    return [p for p in model.parameters() if p.requires_grad]
