"""One source of truth for sampling: the request row's `sampling` is what the cache key, the
backend call and the lineage of synthetic rows all use, including a task's own override."""

import json

import pyarrow as pa

from engine.config import ApiConfig, RunConfig, TeacherConfig
from engine.driver import RoundLoop
from engine.generation.cache import cache_key
from engine.generation.openai_api import OpenAIChatUDF
from engine.generation.backend import build_generator
from engine.tasks import build_task
from tests.fakes import FakeGenerator, FakeTrainer
from tests.fault_server import FaultServer
from tests.unit.test_driver import student, teacher

OVERRIDE = {"temperature": 0.3, "max_tokens": 200}  # the task's own teacher sampling


def run_loop(tmp_path):
    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "rounds": 2,
        "tasks": [{"name": "arithmetic", "n_seed": 10, "n_test": 4,
                   "teacher_sampling": OVERRIDE, "student_sampling": {"max_tokens": 9}}]})
    gen_s, gen_t = FakeGenerator(student), FakeGenerator(teacher)
    loop = RoundLoop(cfg, [build_task(t, cfg.seed) for t in cfg.tasks], "base", "teacher",
                     gen_s, gen_t, FakeTrainer(), log=lambda m: None)
    list(loop.run())
    return loop, gen_s, gen_t


def sent_sampling(requests: pa.Table) -> set[str]:
    return set(requests.column("sampling").to_pylist())


def test_task_override_reaches_requests_and_lineage_unchanged(tmp_path):
    loop, gen_s, gen_t = run_loop(tmp_path)
    (_, _, requests), = [c for c in gen_t.calls if c[0] == "augment"]
    want = {**{"temperature": 0.7, "top_p": 0.95, "max_tokens": 512}, **OVERRIDE}
    assert {json.loads(s) == want for s in sent_sampling(requests)} == {True}
    candidates = loop.store.read_table(loop.store.stage_dir("arithmetic", 0, "augment"))
    # lineage holds the very text the request carried, not a value recomputed from config
    assert set(candidates.column("sampling").to_pylist()) == sent_sampling(requests)
    assert {json.loads(s)["max_tokens"] for _, _, req in gen_s.calls
            for s in sent_sampling(req)} == {9}


def test_cache_key_and_api_body_come_from_the_row(tmp_path):
    loop, _, gen_t = run_loop(tmp_path)
    requests = gen_t.calls[0][2].slice(0, 3)
    with FaultServer() as server:
        api = ApiConfig(base_url=server.url, api_key_env=None)
        pipeline = build_generator(TeacherConfig(model="m", api=api), seed=0)
        keys = pipeline._keys(requests, "m")
        rows = requests.to_pylist()
        assert list(keys.values()) == [cache_key(f"{server.url}|m", r["messages"], r["sampling"],
                                                 0, r.get("regex"), r["sample"]) for r in rows]
        # another sampling text in the row is another cache entry: nothing else feeds the key
        other = requests.set_column(requests.schema.get_field_index("sampling"), "sampling",
                                    pa.array([json.dumps({"temperature": 0.0})] * 3))
        assert set(pipeline._keys(other, "m").values()).isdisjoint(keys.values())
        OpenAIChatUDF(api, "m", key=None)(requests)
    bodies = [e["body"] for e in server.log]
    assert [{k: b[k] for k in ("temperature", "top_p", "max_tokens")} for b in bodies] == [
        json.loads(r["sampling"]) for r in rows]


def test_vllm_replica_builds_its_sampling_params_from_the_row(tmp_path):
    from engine.generation.vllm_replicas import VLLMReplica

    loop, _, gen_t = run_loop(tmp_path)
    requests = gen_t.calls[0][2].slice(0, 2)
    replica = object.__new__(VLLMReplica)  # no engine: only the request -> params step
    params = replica._params(requests)
    for p, row in zip(params, requests.to_pylist()):
        want = json.loads(row["sampling"])
        assert (p.temperature, p.top_p, p.max_tokens) == (
            want["temperature"], want["top_p"], want["max_tokens"])
