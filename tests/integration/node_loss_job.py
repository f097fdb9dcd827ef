"""The job of tests/integration/test_node_loss.py, submitted to its two-node cluster:

    python -m tests.integration.node_loss_job MODEL OUT_DIR

One generation stage over two vLLM replicas, one on each node. The head's spare CPUs are held
while the pool starts, so the second replica goes to the worker node; they are freed before
the stage, so the head has room for that replica when the worker node is lost. The test hangs
the worker node's replica on its first batch and kills that node's raylet meanwhile. After the
stage, the same requests are answered again without the cache by the engines left: the
undisturbed rows the stage's must equal.
"""

import json
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from engine.config import GenerationConfig
from engine.generation.cache import ResponseCache
from engine.generation.backend import build_generator
from engine.sampling import sampling_params, to_json

ROWS = 16


@ray.remote
class Hold:
    """Holds CPUs of the head while the replicas are placed."""

    def ready(self) -> bool:
        return True


def requests(cfg: GenerationConfig) -> pa.Table:
    return pa.table({
        "request_id": [f"r{i}" for i in range(ROWS)],
        "messages": [json.dumps([{"role": "user", "content": f"Count to {i}."}])
                     for i in range(ROWS)],
        "sampling": [to_json(sampling_params(cfg))] * ROWS})


def main(model: str, out: Path) -> None:
    ray.init(logging_level="ERROR")
    head = ray.get_runtime_context().get_node_id()
    hold = Hold.options(num_cpus=2, scheduling_strategy=NodeAffinitySchedulingStrategy(
        head, soft=False)).remote()
    ray.get(hold.ready.remote())
    cfg = GenerationConfig(model=model, replicas=2, cpus_per_replica=2, batch_size=4,
                           max_num_seqs=4, max_tokens=8, max_model_len=512, temperature=0.0,
                           gpu_memory_utilization=0.05, stall_timeout_s=600,
                           placement_timeout_s=300, keep_warm=True)
    pipeline = build_generator(cfg, seed=0, cache=ResponseCache(out / "cache"))
    pipeline.warm_up(model)
    pool = pipeline.backend.pool
    nodes = [i["node"] for i in ray.get([r.info.remote() for r in pool.replicas])]
    ray.kill(hold)
    (out / "placed.json").write_text(json.dumps({"head": head, "replicas": nodes}))
    start = time.time()
    stage = pipeline(requests(cfg), model, "predict")
    (out / "stage.json").write_text(json.dumps({"seconds": time.time() - start,
                                                "done_at": time.time()}))
    pq.write_table(stage, out / "stage.parquet")
    pool = pipeline.backend.pool
    after = [i["node"] for i in ray.get([r.info.remote() for r in pool.replicas])]
    (out / "placed_after.json").write_text(json.dumps(after))
    pipeline.cache = None  # the same requests, undisturbed, by the engines left
    pq.write_table(pipeline(requests(cfg), model, "predict"), out / "undisturbed.parquet")
    pipeline.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
