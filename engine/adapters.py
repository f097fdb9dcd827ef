"""LoRA students: what a round's model folder is, and how an engine serves it.

A round's student (the train stage's `model/` folder) is either a whole HF model or, with
`student.lora`, a PEFT adapter: `adapter_config.json` and the adapter's weights, over the base
model its config names. The trainer writes them (engine/backends/lora.py); the generation
backend serves an adapter from the warm engine of its base by a vLLM `LoRARequest`
(engine/generation/replica_backend.py), so a new round needs no engine start and no weight
reload; export copies it (engine/export.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from engine import fs

ADAPTER_CONFIG = "adapter_config.json"
# The ranks a vLLM engine's `max_lora_rank` may take (vllm/config/lora.py, MaxLoRARanks)
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def is_adapter(model: str) -> bool:
    """Whether the folder `model` (local or a filesystem URI) holds a PEFT adapter."""
    if not fs.is_uri(model) and not Path(model).is_dir():
        return False  # a hub or built-in name: never an adapter the trainer wrote
    try:
        filesystem, root = fs.open_fs(model)
        return fs.exists(filesystem, fs.join(root, ADAPTER_CONFIG))
    except (OSError, ValueError):
        return False


def adapter_config(model: str) -> dict:
    filesystem, root = fs.open_fs(model)
    return json.loads(fs.read_bytes(filesystem, fs.join(root, ADAPTER_CONFIG)))


def adapter_base(model: str) -> str:
    """The base model folder an adapter was trained over (as the trainer recorded it)."""
    base = adapter_config(model).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"adapter {model!r} does not name its base model "
                         f"(base_model_name_or_path in {ADAPTER_CONFIG})")
    return base


def serving(model: str) -> tuple[str, str | None]:
    """(the model an engine must load, the adapter it answers with or None) for a round's
    student or any other model."""
    return (adapter_base(model), model) if is_adapter(model) else (model, None)


def engine_rank(rank: int) -> int:
    """The smallest `max_lora_rank` a vLLM engine accepts that serves adapters of `rank`."""
    return next(r for r in VLLM_RANKS if r >= rank)
