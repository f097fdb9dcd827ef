"""A lost node is survived: in a two-node local cluster, a generation stage has a vLLM
replica on each node; the worker node's raylet is killed by its pid while that replica holds
a batch, and the stage finishes on the head with every row answered, the same rows as an
undisturbed run (tests/integration/node_loss_job.py is the job)."""

import json
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from engine.generation.vllm_replicas import HANG_HOOK
from tests.cluster import BIN, ROOT, LocalCluster

pytestmark = pytest.mark.integration


def test_a_lost_node_is_survived_with_the_same_rows(tiny_model, tmp_path):
    marker, out = tmp_path / "hung-once", tmp_path / "out"
    out.mkdir()
    # the worker node's replica hangs on its first batch (so the node is lost mid-batch);
    # its replacement on the head, without the hook, answers
    with LocalCluster(tmp_path / "home", token=False, head_cpus=4, worker_cpus=2,
                      worker_env={HANG_HOOK: str(marker)}) as cluster:
        job = subprocess.Popen(
            [BIN / "ray", "job", "submit", "--address", cluster.address, "--working-dir", ".",
             "--", sys.executable, "-m", "tests.integration.node_loss_job", tiny_model,
             str(out)], cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 600
        while not marker.exists() and job.poll() is None and time.time() < deadline:
            time.sleep(1)
        assert marker.exists(), f"no replica hung: {job.communicate(timeout=60)[0][-3000:]}"
        cluster.kill_worker_raylet()
        lost = time.time()
        log = job.communicate(timeout=900)[0]
        assert job.returncode == 0, log[-5000:]
        assert cluster.live_nodes() == 1

    placed = json.loads((out / "placed.json").read_text())
    assert placed["replicas"].count(placed["head"]) == 1  # one replica on each node...
    after = json.loads((out / "placed_after.json").read_text())
    assert after == [placed["head"]] * 2  # ...both on the head after the loss
    stage = pq.read_table(out / "stage.parquet").to_pylist()
    undisturbed = pq.read_table(out / "undisturbed.parquet").to_pylist()
    assert [r["request_id"] for r in stage] == [f"r{i}" for i in range(16)]
    assert [r["error"] for r in stage] == [""] * 16
    assert [r["output"] for r in stage] == [r["output"] for r in undisturbed]
    keys = [k for p in sorted((out / "cache").glob("part-*.parquet"))
            for k in pq.read_table(p).column("key").to_pylist()]
    # every row stored; a batch whose answer was in the lost node's object store may be
    # generated a second time (Ray rebuilds lost objects by running their task again), so
    # the cache may hold that batch twice: at most the batches in flight (4 clients, 4 rows)
    assert len(set(keys)) == 16 and len(keys) <= 16 + 4 * 4
    timing = json.loads((out / "stage.json").read_text())
    print(f"node lost (raylet killed) to the stage done: {timing['done_at'] - lost:.0f}s; "
          f"the stage took {timing['seconds']:.0f}s in all; {len(keys) - 16} rows "
          f"generated twice")
