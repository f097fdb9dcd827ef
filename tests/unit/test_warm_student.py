"""Warm student engines: a kept-warm student pool serves the next round's checkpoint by loading
its weights (same architecture and tokenizer), keeping tied parameters tied; anything else
starts new engines. vLLM itself is exercised in tests/integration/test_generation.py."""

import json
import threading
import time
from contextlib import contextmanager

import pyarrow as pa
import pytest
import torch

import engine.generation.replica_backend as replica_backend
from engine.config import GenerationConfig, RunConfig
from engine.generation.backend import build_generator
from engine.generation.replica_backend import ReplicaBackend
from engine.generation.weight_reload import WeightReload, same_architecture, tied_parameters
from engine.placement import fit_problems
from tests.fakes import answered


class TiedLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.embed_tokens = torch.nn.Embedding(10, 4)
        self.lm_head = torch.nn.Linear(4, 10, bias=False)
        self.lm_head.weight = self.model.embed_tokens.weight  # tied, as SmolLM2's


class PackedCopy:
    """Stands in for vLLM's CPU method that keeps a packed copy of a layer's weight."""
    def process_weights_after_loading(self, layer):
        layer.packed = layer.weight.detach().clone()


class FakeWorker(WeightReload):
    """A vLLM worker whose `reload_weights` rebuilds parameters, untying them, as vLLM's
    layerwise reload does."""
    def __init__(self, model):
        self.model_runner = type("Runner", (), {"get_model": lambda _: model})()
        self.model = model

    def reload_weights(self, weights_path):
        self.model.model.embed_tokens.weight = torch.nn.Parameter(torch.full((10, 4), 7.0))


def test_tied_parameters_are_found_under_each_name():
    ties = tied_parameters(TiedLM())
    assert ties == [(("model.embed_tokens", "weight"), [("lm_head", "weight")])]
    assert tied_parameters(torch.nn.Linear(2, 2)) == []


def test_a_reload_that_unties_parameters_is_tied_again_and_prepared_again():
    model = TiedLM()
    model.lm_head.quant_method = PackedCopy()
    assert FakeWorker(model).load_weights_from("/ckpt") == 1
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied again
    assert torch.equal(model.lm_head.packed, torch.full((10, 4), 7.0))  # packed from the new


def checkpoint(folder, hidden=64, tokenizer="tok-a", name="x"):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": hidden, "_name_or_path": name,
        "transformers_version": "5.0", "torch_dtype": "float32"}))
    (folder / "tokenizer.json").write_text(tokenizer)
    return str(folder)


def test_same_architecture_needs_the_same_config_and_tokenizer(tmp_path):
    a = checkpoint(tmp_path / "round_0", name="base")
    assert same_architecture(a, checkpoint(tmp_path / "round_1", name="round_0"))
    assert not same_architecture(a, checkpoint(tmp_path / "wider", hidden=128))
    assert not same_architecture(a, checkpoint(tmp_path / "other_tok", tokenizer="tok-b"))
    assert not same_architecture(a, str(tmp_path / "missing"))  # unreadable: start afresh
    assert not same_architecture(a, "smollm2-135m-instruct")  # a name, not a checkpoint


class FakePool:
    started: list[str] = []
    reloaded: list[tuple[str, str]] = []
    stopped: list[str] = []

    def __init__(self, model, cfg, seed, log=print, lora=None):
        self.model = model
        FakePool.started.append(model)

    def reload(self, model):
        FakePool.reloaded.append((self.model, model))
        self.model = model

    def shutdown(self):
        FakePool.stopped.append(self.model)


@pytest.fixture
def fake_pools(monkeypatch):
    FakePool.started, FakePool.reloaded, FakePool.stopped = [], [], []
    monkeypatch.setattr(replica_backend, "ReplicaPool", FakePool)

    def fake_batches(self, requests, model, group, cache):
        assert self._pools[model].model == model  # the pool serves the model asked for
        yield answered(requests)

    monkeypatch.setattr(ReplicaBackend, "batches", fake_batches)


@contextmanager
def in_use(pipeline, model):
    """`model`'s pool started and used, as during one of the pipeline's passes."""
    with pipeline.holding(model):
        pipeline.warm_up(model)
        yield


def predict(pipeline, model):
    requests = pa.table({"request_id": ["r0"], "messages": ['[{"content": "q"}]'],
                         "sampling": ['{"temperature": 0}']})
    return pipeline(requests, model, "predict")


def test_a_warm_student_pool_loads_each_rounds_weights_instead_of_restarting(
        fake_pools, monkeypatch):
    monkeypatch.setattr(replica_backend, "same_architecture",
                        lambda a, b: a.split("/")[0] == b.split("/")[0])
    pipeline = build_generator(GenerationConfig(keep_warm=True), seed=0, log=lambda m: None)
    for model in ["smol/round_0", "smol/round_1", "smol/round_2"]:
        predict(pipeline, model)
    assert FakePool.started == ["smol/round_0"]  # one start...
    assert FakePool.reloaded == [("smol/round_0", "smol/round_1"),
                                 ("smol/round_1", "smol/round_2")]  # ...then loads
    assert pipeline.backend.pool.model == "smol/round_2"
    predict(pipeline, "other/round_0")  # another architecture: new engines, the old ones stop
    assert FakePool.started == ["smol/round_0", "other/round_0"]
    assert FakePool.stopped == ["smol/round_2"]


def test_a_pool_in_use_is_never_reloaded_under_its_caller(fake_pools, monkeypatch):
    monkeypatch.setattr(replica_backend, "same_architecture", lambda a, b: True)
    pipeline = build_generator(GenerationConfig(keep_warm=True), seed=0, log=lambda m: None)
    with in_use(pipeline, "task_a/round_1"):  # task a predicts...
        predict(pipeline, "task_b/round_1")  # ...while task b's student needs engines too
    assert FakePool.started == ["task_a/round_1", "task_b/round_1"]
    assert FakePool.reloaded == []


def test_without_keep_warm_each_model_gets_new_engines(fake_pools, monkeypatch):
    monkeypatch.setattr(replica_backend, "same_architecture", lambda a, b: True)
    pipeline = build_generator(GenerationConfig(keep_warm=False), seed=0, log=lambda m: None)
    predict(pipeline, "smol/round_0")
    predict(pipeline, "smol/round_1")
    assert FakePool.started == ["smol/round_0", "smol/round_1"] and FakePool.reloaded == []


def test_a_warm_student_that_leaves_no_room_for_training_is_refused_with_the_fix():
    cfg = RunConfig.model_validate({"tasks": [{"name": "arithmetic"}],
                                    "train": {"use_gpu": True, "num_workers": 1},
                                    "teacher": {"keep_warm": False},
                                    "student": {"keep_warm": True}})
    problems = fit_problems(cfg, [{"CPU": 8, "GPU": 1}])
    assert problems and all("student.keep_warm: false" in p for p in problems)
    assert "leave no room for training" in problems[0]
    assert fit_problems(cfg, [{"CPU": 8, "GPU": 2}]) == []


def test_a_warm_pool_going_idle_makes_room_for_a_pool_waiting_to_start(fake_pools, monkeypatch):
    """Two tasks side by side, each with its own student: b's engines wait for room that a's
    warm engines hold; once a's call ends, its pool is shut down instead of kept."""
    monkeypatch.setattr(replica_backend, "same_architecture", lambda a, b: False)
    a_started, b_done = threading.Event(), threading.Event()

    class WaitingPool(FakePool):
        def __init__(self, model, cfg, seed, log=print, lora=None):
            if model == "b":  # the cluster has room only once a's engines are gone
                a_started.set()
                for _ in range(100):
                    if "a" in FakePool.stopped:
                        break
                    time.sleep(0.05)
                else:
                    raise AssertionError("a's idle warm pool never made room")
            super().__init__(model, cfg, seed, log)

    monkeypatch.setattr(replica_backend, "ReplicaPool", WaitingPool)
    pipeline = build_generator(GenerationConfig(keep_warm=True), seed=0, log=lambda m: None)
    with in_use(pipeline, "a"):
        b = threading.Thread(target=lambda: (predict(pipeline, "b"), b_done.set()))
        b.start()
        assert a_started.wait(timeout=5)
    b.join(timeout=10)
    assert b_done.is_set() and FakePool.started == ["a", "b"] and FakePool.stopped == ["a"]


def test_a_stage_holding_the_teacher_starts_its_engines_once_for_all_its_calls(fake_pools):
    """An augment stage asks, checks answers and tops up: three calls, one engine start,
    even with keep_warm off (engine/driver.py holds the teacher for the stage)."""
    pipeline = build_generator(GenerationConfig(keep_warm=False), seed=0, log=lambda m: None)
    with pipeline.holding("teacher"):
        for _ in range(3):
            predict(pipeline, "teacher")
        assert FakePool.stopped == []
    assert FakePool.started == ["teacher"] and FakePool.stopped == ["teacher"]
    predict(pipeline, "teacher")  # the next stage starts it again
    assert FakePool.started == ["teacher", "teacher"]
