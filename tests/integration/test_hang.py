"""A hung engine is noticed and replaced: a vLLM replica made to hang (the test hook blocks
its engine) is killed and started again, and its batch answered by the other replica; a row
that hangs every engine is quarantined with its reason instead of retried forever."""

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.config import GenerationConfig
from engine.generation.cache import ResponseCache
from engine.generation.backend import build_generator
from engine.generation.vllm_replicas import CONTROL, HANG_HOOK, ReplicaClient, _Router
from engine.records import GENERATED
from engine.sampling import sampling_params, to_json

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_with_hang_hook(tmp_path_factory):
    import ray

    marker = tmp_path_factory.mktemp("hang") / "hung-once"
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {HANG_HOOK: str(marker)}})
    yield marker
    ray.shutdown()


def requests(n: int, cfg) -> pa.Table:
    return pa.table({
        "request_id": [f"r{i}" for i in range(n)],
        "messages": [json.dumps([{"role": "user", "content": f"Count to {i}."}])
                     for i in range(n)],
        "sampling": [to_json(sampling_params(cfg))] * n})


# slow tier (~170 s of CI): CI keeps the quarantine test below (stall, replacement and
# quarantine through the real client and router, over stub replicas), test_node_loss's real
# replica lost with its node, and the unit tests of stall detection (tests/unit/test_node_loss.py).
@pytest.mark.slow
def test_a_hung_replica_is_replaced_and_every_row_answered_once(ray_with_hang_hook,
                                                                 tiny_model, tmp_path):
    cfg = GenerationConfig(model=tiny_model, replicas=2, batch_size=4, max_num_seqs=4,
                           max_tokens=8, max_model_len=512, temperature=0.0,
                           gpu_memory_utilization=0.05, stall_timeout_s=20)
    pipeline = build_generator(cfg, seed=0, cache=ResponseCache(tmp_path / "cache"))
    pipeline.warm_up(tiny_model)
    start = time.time()
    out = pipeline(requests(16, cfg), tiny_model, "predict")
    seconds = time.time() - start
    pipeline.shutdown()
    assert ray_with_hang_hook.exists()  # an engine did hang on its first batch
    assert out.column("request_id").to_pylist() == [f"r{i}" for i in range(16)]
    assert out.column("error").to_pylist() == [""] * 16  # every row answered...
    keys = [k for p in sorted((tmp_path / "cache").glob("part-*.parquet"))
            for k in pq.read_table(p).column("key").to_pylist()]
    assert len(keys) == len(set(keys)) == 16  # ...once
    retried = [a for a in out.column("attempts").to_pylist() if a > 1]
    assert retried, "the hung batch's rows were sent to a second engine"
    print(f"hang to answer on the next replica: {seconds:.0f}s for the stage "
          f"(stall_timeout_s {cfg.stall_timeout_s:.0f})")


class StubReplica:
    """A replica without an engine: a row whose text has HANG hangs it (no progress since)."""

    def __init__(self):
        self.hung_since = None

    def stalled_s(self) -> float:
        return 0.0 if self.hung_since is None else time.monotonic() - self.hung_since

    def generate(self, batch: pa.Table, model: str | None = None, group: str = "",
                 adapter: str | None = None) -> pa.Table:  # VLLMReplica.generate's signature
        messages = batch.column("messages").to_pylist()
        if any("HANG" in m for m in messages):
            self.hung_since = time.monotonic()
            time.sleep(10 ** 6)
        return pa.Table.from_pylist(
            [{"request_id": r, "output": "ok", "prompt_tokens": 1, "completion_tokens": 1,
              "error": "", "cached": False, "attempts": 1, "replica": "stub"}
             for r in batch.column("request_id").to_pylist()], schema=GENERATED)


def test_a_row_that_hangs_every_engine_is_quarantined(ray_with_hang_hook):
    import ray

    class StubRouter(_Router):  # the pool's router, over stub replicas
        def __init__(self, n):
            self._make = lambda k: ray.remote(num_cpus=0, concurrency_groups={CONTROL: 1})(
                StubReplica).remote()
            self.replicas = [self._make(k) for k in range(n)]
            self.groups, self.i, self.replaced = [], -1, 0

        def place(self, index):  # stubs have no placement group: always in place
            return "placed"

    router = ray.remote(num_cpus=0)(StubRouter).remote(2)
    client = ReplicaClient(router, stall_timeout_s=3, max_stalls=2)
    batch = pa.table({"request_id": ["a", "b", "c"],
                      "messages": ["fine", "HANG here", "fine too"],
                      "sampling": ["{}"] * 3})
    out = client(batch).to_pylist()
    assert [r["request_id"] for r in out] == ["a", "b", "c"]
    assert [r["output"] for r in out] == ["ok", "", "ok"]
    assert out[1]["error"] == ("quarantined: hung 2 engine(s) on its own (and 2 in its batch), "
                               "none answered within 3s")
    # every engine a row was sent to counts: the batch hung two, then each row went alone
    assert [r["attempts"] for r in out] == [3, 4, 3]
    assert ray.get(router.replacements.remote()) == 4  # each stall replaced its replica
