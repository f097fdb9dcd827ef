"""LoRA students without an engine: the config's defaults and refusals, which engines serve an
adapter (its base's warm pool, or the teacher's), cache identity by the adapter's content, and
PEFT's adapter over a small transformers model. The real stack (DeepSpeed training, vLLM
serving the adapter) is tests/integration/test_lora.py."""

import json

import pyarrow as pa
import pytest

import engine.generation.replica_backend as replica_backend
from engine.adapters import adapter_base, engine_rank, is_adapter, serving
from engine.config import LORA_LR, RunConfig, StudentConfig, TeacherConfig
from engine.errors import ModelError, StageError
from engine.generation.backend import build_generators, teacher_serves_student
from engine.generation.replica_backend import ReplicaBackend
from tests.fakes import answered


def adapter(folder, base: str, weights: bytes = b"w0") -> str:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": base, "r": 8, "peft_type": "LORA"}))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return str(folder)


def base_folder(folder) -> str:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return str(folder)


def test_a_lora_student_stays_warm_and_trains_at_loras_rate_unless_told_otherwise():
    cfg = RunConfig.model_validate({"tasks": [{"name": "arithmetic"}],
                                    "student": {"lora": {"rank": 8}}})
    assert cfg.student.keep_warm and cfg.train.lr == LORA_LR
    told = RunConfig.model_validate({"tasks": [{"name": "arithmetic"}], "train": {"lr": 1e-5},
                                     "student": {"lora": {}, "keep_warm": False}})
    assert not told.student.keep_warm and told.train.lr == 1e-5
    full = RunConfig.model_validate({"tasks": [{"name": "arithmetic"}]})
    assert not full.student.keep_warm and full.train.lr == 5e-5  # unchanged without lora


def test_lora_on_an_encoder_student_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="remove student.lora"):
        StudentConfig(kind="sequence_classification", lora={})


def test_an_adapter_folder_is_served_by_its_base(tmp_path):
    base = base_folder(tmp_path / "base")
    round_0 = adapter(tmp_path / "round_0" / "model", base)
    assert is_adapter(round_0) and not is_adapter(base) and not is_adapter("smollm2-135m")
    assert adapter_base(round_0) == base
    assert serving(round_0) == (base, round_0) and serving(base) == (base, None)
    assert [engine_rank(r) for r in (1, 2, 8, 9, 64, 300)] == [1, 8, 8, 16, 64, 320]


class FakePool:
    started: list[tuple[str, object]] = []

    def __init__(self, model, cfg, seed, log=print, lora=None):
        self.model = model
        FakePool.started.append((model, lora))

    def reload(self, model):
        raise AssertionError("an adapter never reloads the base's weights")

    def shutdown(self):
        pass


@pytest.fixture
def fake_pools(monkeypatch):
    FakePool.started = []
    monkeypatch.setattr(replica_backend, "ReplicaPool", FakePool)
    served = []

    def fake_batches(self, requests, model, group, cache):
        base, lora = serving(model)
        served.append((self._pools[base].model, lora))
        yield answered(requests)

    monkeypatch.setattr(ReplicaBackend, "batches", fake_batches)
    return served


def ask(pipeline, model, text="q"):
    requests = pa.table({"request_id": ["r0"], "messages": [json.dumps([{"content": text}])],
                         "sampling": ['{"temperature": 0}']})
    return pipeline(requests, model, "predict")


def test_every_rounds_adapter_is_answered_by_one_warm_pool_of_the_base(tmp_path, fake_pools):
    base = base_folder(tmp_path / "base")
    student = StudentConfig(model=base, lora={"rank": 8})
    student_gen, _ = build_generators(student, TeacherConfig(model="other"), base, "other",
                                      seed=0, log=lambda m: None)
    rounds = [adapter(tmp_path / f"round_{r}" / "model", base, f"w{r}".encode())
              for r in range(3)]
    for model in rounds:
        ask(student_gen, model)
    assert [m for m, _ in FakePool.started] == [base]  # one start, for the base
    assert FakePool.started[0][1].rank == 8  # ...with adapters enabled
    assert fake_pools == [(base, m) for m in rounds]  # each round answered by its adapter


def test_cache_keys_follow_the_adapters_content(tmp_path):
    base = base_folder(tmp_path / "base")
    backend = ReplicaBackend(StudentConfig(model=base, lora={}), seed=0)
    first = adapter(tmp_path / "a" / "model", base, b"round 0 weights")
    same = adapter(tmp_path / "b" / "model", base, b"round 0 weights")
    ids = {backend.model_id(m) for m in (first, same, base)}
    assert len(ids) == 3  # an adapter is not its base, nor another folder's adapter
    before = backend.model_id(first)
    (tmp_path / "a" / "model" / "adapter_model.safetensors").write_bytes(b"retrained, longer")
    assert backend.model_id(first) != before  # re-written in place: a new model


def test_engines_started_without_lora_refuse_an_adapter(tmp_path):
    base = base_folder(tmp_path / "base")
    backend = ReplicaBackend(TeacherConfig(model=base), seed=0)
    with pytest.raises(ModelError, match="set student.lora"):
        backend.warm_up(adapter(tmp_path / "r0" / "model", base))


def test_the_teacher_serves_the_students_adapters_only_where_it_answers_alike():
    lora = StudentConfig(model="m", lora={})
    teacher = TeacherConfig(model="m")
    assert teacher_serves_student(lora, teacher, "/models/m", "/models/m")
    assert not teacher_serves_student(StudentConfig(model="m"), teacher, "/models/m",
                                      "/models/m")  # a full fine-tune has its own weights
    assert not teacher_serves_student(lora, teacher, "/models/m", "/models/other")
    assert not teacher_serves_student(StudentConfig(model="m", lora={}, max_model_len=4096),
                                      teacher, "/models/m", "/models/m")  # another context
    assert not teacher_serves_student(
        lora, TeacherConfig(model="m", api={"base_url": "http://x/v1"}), "/models/m",
        "/models/m")


def test_shared_engines_start_once_for_teacher_and_student(tmp_path, fake_pools):
    base = base_folder(tmp_path / "base")
    student_gen, teacher_gen = build_generators(
        StudentConfig(model=base, lora={"rank": 16}), TeacherConfig(model=base), base, base,
        seed=0, log=lambda m: None)
    ask(teacher_gen, base, "write an example")
    ask(student_gen, adapter(tmp_path / "r0" / "model", base), "answer this")
    assert [m for m, _ in FakePool.started] == [base]
    assert student_gen.backend is teacher_gen.backend


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    out = tmp_path_factory.mktemp("small-llama")
    LlamaForCausalLM(config).save_pretrained(out)
    return str(out)


def test_peft_trains_only_the_adapter_and_saves_it_naming_the_base(small_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    from engine.backends.lora import base_of, save_adapter, trainable, with_adapter

    lora = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    model = with_adapter(AutoModelForCausalLM.from_pretrained(small_llama), lora, small_llama)
    params = trainable(model)
    assert params and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    assert sum(p.numel() for p in params) < sum(p.numel() for p in model.parameters()) / 5
    out = tmp_path / "round_0"
    save_adapter(model, str(out), small_llama)
    assert adapter_base(str(out)) == small_llama and base_of(str(out)) == small_llama
    # a continued round (strategy.from_base: false) trains the previous round's adapter on
    again = with_adapter(AutoModelForCausalLM.from_pretrained(small_llama), lora, str(out))
    assert trainable(again)


def test_target_modules_the_model_lacks_are_named_with_the_ones_it_has(small_llama):
    from transformers import AutoModelForCausalLM

    from engine.backends.lora import with_adapter

    lora = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"]}
    with pytest.raises(StageError, match=r"target_modules.*'q_proj'"):
        with_adapter(AutoModelForCausalLM.from_pretrained(small_llama), lora, small_llama)
