"""Prediction by an encoder student (`student.kind: sequence_classification`): Ray Data batch
inference on an actor pool, each actor holding the round's classifier.

It is the student's TextGenerator (engine/backends/__init__.py): it reads the request's raw
`input` (not its chat messages) and answers with the predicted label's name, which the task's
grader reads like any student answer. vLLM is for generative models; an encoder's forward
pass is one matrix product per batch, cheap enough that no response cache is kept.
"""

from __future__ import annotations

import os
import socket
import time

import pyarrow as pa

from engine import fs
from engine.config import StudentConfig
from engine.console import eta, progress
from engine.errors import StageError, root_cause
from engine.records import GENERATED, require_columns

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


class EncoderPredictor:
    """TextGenerator for an encoder student: `replicas` actors, `batch_size` rows a batch."""

    def __init__(self, cfg: StudentConfig, log=print):
        self.cfg, self.log = cfg, log

    def __call__(self, requests: pa.Table, model: str, stage: str, group: str = "") -> pa.Table:
        import ray

        require_columns(requests, ["request_id", "input"], stage)
        if requests.num_rows == 0:
            return GENERATED.empty_table()
        start, cfg = time.time(), self.cfg
        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = ray.data.from_blocks([requests.select(["request_id", "input"])]).map_batches(
            EncoderClassifier, batch_size=cfg.batch_size, batch_format="pyarrow",
            num_cpus=cfg.cpus_per_replica,
            fn_constructor_kwargs={"model": model, "threads": int(cfg.cpus_per_replica)},
            compute=ray.data.ActorPoolStrategy(size=cfg.replicas))
        done: dict[str, dict] = {}
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                for row in batch.to_pylist():
                    done[row["request_id"]] = row
                seconds = time.time() - start
                progress(self.log, stage, f"{len(done)}/{requests.num_rows} rows "
                         f"{eta(len(done), requests.num_rows, seconds)}")
        except Exception as exc:  # noqa: BLE001 - Ray wraps the cause in many types
            raise StageError(stage, f"encoder prediction stopped: {root_cause(exc)}") from None
        ids = requests.column("request_id").to_pylist()
        out = pa.Table.from_pylist([done[i] for i in ids], schema=GENERATED)
        self.log(f"[{stage}] {len(ids)} rows in {time.time() - start:.0f}s by the encoder "
                 f"student ({cfg.replicas} actor(s))")
        return out

    def shutdown(self) -> None:
        """Nothing held between stages: each stage's actor pool ends with its dataset."""
