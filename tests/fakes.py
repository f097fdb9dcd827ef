"""Deterministic fakes for the backend protocols (engine/backends/__init__.py). Unit tests only."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Callable

import pyarrow as pa

from engine import fs
from engine.records import GENERATED


def answered(requests: pa.Table, output: str = "ok") -> pa.Table:
    """GENERATED rows answering every request with `output`, as one replica batch would."""
    n = requests.num_rows
    return pa.table({"request_id": requests.column("request_id"), "output": [output] * n,
                     "prompt_tokens": [1] * n, "completion_tokens": [1] * n,
                     "error": [""] * n, "cached": [False] * n, "attempts": [1] * n,
                     "replica": ["fake"] * n}, schema=GENERATED)


class FakeGenerator:
    """TextGenerator whose output is a pure function of the request's messages."""

    def __init__(self, respond: Callable[[list[dict]], str]):
        self.respond = respond
        self.calls: list[tuple[str, str, pa.Table]] = []  # (stage, model, requests)
        self.groups: list[str] = []  # each call's group, in the same order

    def __call__(self, requests: pa.Table, model: str, stage: str, group: str = "") -> pa.Table:
        self.calls.append((stage, model, requests))
        self.groups.append(group)
        rows = []
        for rid, messages in zip(requests.column("request_id").to_pylist(),
                                 requests.column("messages").to_pylist()):
            text = self.respond(json.loads(messages))
            rows.append({"request_id": rid, "output": text, "prompt_tokens": len(messages),
                         "completion_tokens": len(text.split()), "error": "", "cached": False,
                         "attempts": 1, "replica": "fake"})
        return pa.Table.from_pylist(rows, schema=GENERATED)


class KeyedTeacher(FakeGenerator):
    """Answers as the real pipeline with its response cache does: the same request (messages,
    sample, draw) gets the same answer, a new sample a new one."""

    def __call__(self, requests, model, stage, group=""):
        n = requests.num_rows
        keys = zip(*(requests.column(c).to_pylist() if c in requests.column_names else [0] * n
                     for c in ("sample", "draw")))
        keyed = requests.set_column(
            requests.schema.get_field_index("messages"), "messages",
            pa.array([json.dumps([*json.loads(m)[:-1], {
                **json.loads(m)[-1],
                "content": json.loads(m)[-1]["content"] + f"\n(sample {s}, draw {d})"}])
                for m, (s, d) in zip(requests.column("messages").to_pylist(), keys)]))
        return super().__call__(keyed, model, stage, group)


class FakeTrainer:
    """StudentTrainer that records what it was given and writes a marker 'model' folder."""

    def __init__(self):
        self.calls: list[tuple[pa.Table, str, str]] = []
        self.seeds: list[int] = []
        self.validations: list[pa.Table | None] = []  # the rows each call may choose an epoch on

    def __call__(self, examples: pa.Table, base_model: str, out_dir: str, task: str,
                 seed: int = 0, labels: list[str] = (), validation: pa.Table | None = None) -> dict:
        self.calls.append((examples, base_model, out_dir))
        self.validations.append(validation)
        self.labels = list(labels)
        self.seeds.append(seed)
        filesystem, path = fs.open_fs(out_dir)  # a local path or a URI, as for the real one
        fs.write_bytes(filesystem, f"{path}/config.json", b"{}")
        return {"steps": 2, "final_loss": 0.5, "loss_curve": [0.9, 0.5]}


class FakeBackend:
    """GenerationBackend (engine/generation/backend.py) answering each row with `output`;
    records what each pass asked for, and which models were held and started."""

    name = "the fake backend"
    columns = ("request_id", "messages", "sampling")

    def __init__(self, output: str = "ok", caches: bool = True):
        self.output, self.caches = output, caches
        self.passes: list[list[str]] = []  # request ids of each pass
        self.held: list[str] = []
        self.started: list[str] = []

    def model_id(self, model: str) -> str:
        return model

    @contextmanager
    def holding(self, model: str):
        self.held.append(model)
        yield

    def warm_up(self, model: str) -> None:
        self.started.append(model)

    def batches(self, requests: pa.Table, model: str, group: str, cache):
        self.passes.append(requests.column("request_id").to_pylist())
        out = answered(requests, self.output)
        if cache is not None:  # as a real backend's workers do, batch by batch
            cache.store(requests, out)
        yield out

    def shutdown(self) -> None:
        pass
