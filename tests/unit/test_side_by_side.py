"""Tasks side by side (`parallel`), with fake backends: groups of units overlap in time, one
after another when parallel is 1, and an error that stops the job stops the others at their
next stage. And the generation pipeline shared by concurrent calls: one replica pool per
model, started once, shut down after its last call."""

import threading
import time

import pyarrow as pa
import pytest

from engine.config import GenerationConfig, RunConfig
from engine.driver import RoundLoop
from engine.errors import StorageError
from engine.generation import replica_backend
from engine.generation.backend import build_generator
from engine.generation.replica_backend import ReplicaBackend
from engine.records import GENERATED
from engine.tasks import build_task
from tests.fakes import FakeGenerator, FakeTrainer, answered
from tests.unit.test_driver import student, teacher

TWO_TASKS = [{"name": "arithmetic", "n_seed": 10, "n_test": 6},
             {"name": "sums", "type": "arithmetic", "n_seed": 10, "n_test": 6}]


def make_loop(tmp_path, trainer, parallel=None, rounds=2, teacher_gen=None):
    cfg = RunConfig.model_validate({"run_dir": str(tmp_path / "run"), "rounds": rounds,
                                    "parallel": parallel, "tasks": TWO_TASKS,
                                    "stop": {"when_nothing_added": False}})
    return RoundLoop(cfg, [build_task(t, cfg.seed) for t in cfg.tasks], "base", "teacher",
                     FakeGenerator(student), teacher_gen or FakeGenerator(teacher), trainer,
                     log=lambda m: None)


class TimedTrainer(FakeTrainer):
    """Records how many trainings run at once; with a barrier, each round-0 training waits
    for the other task's (so the two can only finish if they run at the same time)."""

    def __init__(self, barrier: threading.Barrier | None = None):
        super().__init__()
        self.barrier, self.active, self.most = barrier, 0, 0
        self.lock = threading.Lock()

    def __call__(self, examples, base_model, out_dir, task, *args, **kwargs):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            if self.barrier is not None and "round_0" in out_dir:
                self.barrier.wait(timeout=10)
            else:
                time.sleep(0.05)
            return super().__call__(examples, base_model, out_dir, task, *args, **kwargs)
        finally:
            with self.lock:
                self.active -= 1


def test_tasks_run_side_by_side_by_default(tmp_path):
    trainer = TimedTrainer(threading.Barrier(2))
    seen = [(m["unit"], m["round"]) for ms in make_loop(tmp_path, trainer).run() for m in ms]
    assert trainer.most == 2  # both tasks were training at once
    assert sorted(seen) == [("arithmetic", 0), ("arithmetic", 1), ("sums", 0), ("sums", 1)]
    # each task's rounds still come in order
    assert [r for u, r in seen if u == "sums"] == [0, 1]
    assert (tmp_path / "run" / "sums" / "round_1" / "metrics.json").exists()


def test_teacher_calls_name_their_unit_so_a_shared_replica_serves_the_tasks_in_turn(tmp_path):
    teacher_gen = FakeGenerator(teacher)
    list(make_loop(tmp_path, FakeTrainer(), teacher_gen=teacher_gen).run())
    assert teacher_gen.groups and set(teacher_gen.groups) == {"arithmetic", "sums"}


def test_parallel_one_runs_tasks_one_after_another(tmp_path):
    trainer = TimedTrainer()
    rounds = [[m["unit"] for m in ms] for ms in make_loop(tmp_path, trainer, parallel=1).run()]
    assert trainer.most == 1
    assert rounds == [["arithmetic", "sums"], ["arithmetic", "sums"]]  # one list per round


def test_a_job_stopping_error_stops_the_other_task_at_its_next_stage(tmp_path):
    """arithmetic's round-1 training meets a full disk while sums trains: the job raises the
    disk's error, and sums starts no stage after the training in flight."""
    sums_training, failed = threading.Event(), threading.Event()

    class FullDisk(TimedTrainer):
        def __call__(self, examples, base_model, out_dir, task, *args, **kwargs):
            if "round_1" in out_dir:
                if task == "arithmetic":
                    sums_training.wait(timeout=10)
                    failed.set()
                    raise StorageError(out_dir, "no space left on device")
                sums_training.set()
                failed.wait(timeout=10)  # sums: still training when arithmetic fails...
                deadline = time.time() + 10
                while not loop.stages.abort.is_set() and time.time() < deadline:
                    time.sleep(0.01)  # ...and until the job has stopped
            return super().__call__(examples, base_model, out_dir, task, *args, **kwargs)

    loop = make_loop(tmp_path, FullDisk(), rounds=3)
    with pytest.raises(StorageError, match="no space left"):
        list(loop.run())
    sums_r1 = tmp_path / "run" / "sums" / "round_1"
    assert (sums_r1 / "train" / "model").exists()  # the stage in flight finished...
    assert not (sums_r1 / "predict").exists()  # ...and no new one started


# -- one pool per model, shared by concurrent calls --------------------------------------------
class FakePool:
    started: list[str] = []
    stopped: list[str] = []

    def __init__(self, model, cfg, seed, log=print, lora=None):
        self.model = model
        FakePool.started.append(model)

    def shutdown(self):
        FakePool.stopped.append(self.model)


def test_concurrent_calls_share_one_pool_per_model(monkeypatch):
    FakePool.started, FakePool.stopped = [], []
    monkeypatch.setattr(replica_backend, "ReplicaPool", FakePool)
    together = threading.Barrier(3)
    seen_pools = []

    def fake_batches(self, requests, model, group, cache):
        seen_pools.append(self._pools[model])
        together.wait(timeout=10)  # all three calls hold their pools at once
        yield answered(requests)

    monkeypatch.setattr(ReplicaBackend, "batches", fake_batches)
    pipeline = build_generator(GenerationConfig(model="m", keep_warm=False), seed=0,
                                  log=lambda m: None)

    def call(model, i):
        requests = pa.table({"request_id": [f"r{i}"], "messages": [f'[{{"content": "{i}"}}]'],
                             "sampling": ['{"temperature": 0}']})
        assert pipeline(requests, model, "predict").column("output").to_pylist() == ["ok"]

    threads = [threading.Thread(target=call, args=(m, i))
               for i, m in enumerate(["student-a", "student-a", "teacher"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert sorted(FakePool.started) == ["student-a", "teacher"]  # one start per model
    assert sorted(FakePool.stopped) == ["student-a", "teacher"]  # after its last call
    assert len({id(p) for p in seen_pools}) == 2
    assert pipeline.backend.pool is None


def test_a_call_s_group_reaches_the_replicas_and_defaults_to_the_stage(monkeypatch):
    monkeypatch.setattr(replica_backend, "ReplicaPool", FakePool)
    groups = []

    def fake_batches(self, requests, model, group, cache):
        groups.append(group)
        yield answered(requests)

    monkeypatch.setattr(ReplicaBackend, "batches", fake_batches)
    pipeline = build_generator(GenerationConfig(model="m"), seed=0, log=lambda m: None)
    for i, group in enumerate(["gsm8k/s3/seed_0", ""]):
        requests = pa.table({"request_id": [f"r{i}"], "messages": [f'[{{"content": "{i}"}}]'],
                             "sampling": ['{"temperature": 0}']})
        pipeline(requests, "teacher", "augment", group=group)
    assert groups == ["gsm8k/s3/seed_0", "augment"]


def test_a_request_another_call_is_generating_is_read_from_the_cache_not_generated_again(
        monkeypatch, tmp_path):
    """Three seeds of a compare side by side ask the same seed-synthesis prompts: each is
    generated once, the other calls wait for it and read it from the cache."""
    from engine.generation.cache import ResponseCache

    monkeypatch.setattr(replica_backend, "ReplicaPool", FakePool)
    generated, first_started = [], threading.Event()

    def fake_batches(self, requests, model, group, cache):
        generated.extend(requests.column("request_id").to_pylist())
        first_started.set()
        time.sleep(0.3)  # the other calls arrive while this one generates
        n = requests.num_rows
        out = pa.table({"request_id": requests.column("request_id"),
                        "output": [f"answer to {m}" for m in requests["messages"].to_pylist()],
                        "prompt_tokens": [1] * n, "completion_tokens": [1] * n,
                        "error": [""] * n, "cached": [False] * n, "attempts": [1] * n,
                        "replica": ["fake"] * n}, schema=GENERATED)
        cache.store(requests, out)  # as the replica clients do, batch by batch
        yield out

    monkeypatch.setattr(ReplicaBackend, "batches", fake_batches)
    pipeline = build_generator(GenerationConfig(model="m"), seed=0,
                                  cache=ResponseCache(str(tmp_path / "cache")),
                                  log=lambda m: None)
    results = {}

    def call(name, ids):
        requests = pa.table({"request_id": [f"{name}-{i}" for i in ids],
                             "messages": [f'[{{"content": "{i}"}}]' for i in ids],
                             "sampling": ['{"temperature": 0.7}'] * len(ids)})
        if name != "first":
            first_started.wait(timeout=10)
        results[name] = pipeline(requests, "teacher", "augment").to_pylist()

    threads = [threading.Thread(target=call, args=("first", [0, 1, 2])),
               threading.Thread(target=call, args=("second", [1, 2, 3])),
               threading.Thread(target=call, args=("third", [0, 1, 2]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert sorted(generated) == ["first-0", "first-1", "first-2", "second-3"]
    for name, rows in results.items():
        assert [r["output"] for r in rows] == [
            f'answer to [{{"content": "{r["request_id"].split("-")[1]}"}}]' for r in rows]
        assert not any(r["error"] for r in rows)
    assert [r["cached"] for r in results["second"]] == [True, True, False]
