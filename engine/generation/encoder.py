"""Prediction by an encoder student (`student.kind: sequence_classification`): Ray Data batch
inference on an actor pool, each actor holding the round's classifier.

It is the student's generation backend (engine/generation/backend.py): it reads the request's
raw `input` (not its chat messages) and answers with the predicted label's name, which the
task's grader reads like any student answer. vLLM is for generative models; an encoder's
forward pass is one matrix product per batch, cheap enough that no response cache is kept.
"""

from __future__ import annotations

import os
import socket
from contextlib import nullcontext

import pyarrow as pa
import pyarrow.compute as pc

from engine import fs
from engine.config import StudentConfig
from engine.generation.cache import ResponseCache, model_fingerprint
from engine.records import GENERATED

MAX_TOKENS = 512  # BERT-style position embeddings; longer texts are cut


class EncoderClassifier:
    """Ray Data UDF: one copy of the classifier per actor; a batch in, one label out per row."""

    def __init__(self, model: str, threads: int = 1):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.set_num_threads(max(1, threads))
        local = fs.localize(model)
        self.tokenizer = AutoTokenizer.from_pretrained(local)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            local, dtype=torch.float32).eval()
        self.labels = self.model.config.id2label
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        texts = batch.column("input").to_pylist()
        enc = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt",
                             max_length=min(MAX_TOKENS, self.tokenizer.model_max_length))
        with torch.inference_mode():
            best = self.model(**enc).logits.argmax(-1).tolist()
        n = len(texts)
        return pa.table({
            "request_id": batch.column("request_id"),
            "output": [self.labels[i] for i in best],
            "prompt_tokens": pa.array(enc["attention_mask"].sum(-1).tolist(), pa.int64()),
            "completion_tokens": pa.array([0] * n, pa.int64()),
            "error": [""] * n, "cached": [False] * n, "attempts": pa.array([1] * n, pa.int32()),
            "replica": [self.name] * n}, schema=GENERATED)


class EncoderBackend:
    """The encoder student's backend (engine/generation/backend.py): `replicas` classifier
    actors, `batch_size` rows a batch. Nothing is held between calls: each call's actor pool
    ends with its dataset."""

    caches = False  # a forward pass per batch costs less than keeping its answers
    columns = ("request_id", "input")

    def __init__(self, cfg: StudentConfig, log=print):
        self.cfg, self.log = cfg, log
        self.name = f"the encoder student ({cfg.replicas} actor(s))"

    def model_id(self, model: str) -> str:
        return model_fingerprint(model)

    def holding(self, model: str):
        return nullcontext()

    def warm_up(self, model: str) -> None:
        """Nothing to start ahead: each call starts its actors with its dataset."""

    def shutdown(self) -> None:
        """Nothing held between stages."""

    def batches(self, requests: pa.Table, model: str, group: str,
                cache: ResponseCache | None):
        """Yield GENERATED batches as they finish; `group` and `cache` are unused."""
        import ray

        from engine.generation.backend import engine_data_context

        cfg = self.cfg
        engine_data_context()
        ds = ray.data.from_blocks([by_length(requests)]).map_batches(
            EncoderClassifier, batch_size=cfg.batch_size, batch_format="pyarrow",
            num_cpus=cfg.cpus_per_replica,
            fn_constructor_kwargs={"model": model, "threads": int(cfg.cpus_per_replica)},
            compute=ray.data.ActorPoolStrategy(size=cfg.replicas))
        yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")


def by_length(requests: pa.Table) -> pa.Table:
    """The requests' ids and texts, shortest text first. A batch pads to its longest row, so
    one 512-token review among 63 short ones costs what 64 long ones do; rows of like length
    side by side cost what they read. Answers are matched by request_id, in any order."""
    rows = requests.select(["request_id", "input"])
    return rows.take(pc.sort_indices(pc.utf8_length(rows.column("input"))))
