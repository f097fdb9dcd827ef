"""A lost node, with fakes: a generation pass the cluster breaks goes on within the call with
the rows not answered yet (those a worker stored are read from the cache); a replica or a
training whose node is gone waits while the nodes left could hold it, and stops with a clear
message once they cannot."""

import time

import pyarrow as pa
import pytest

from engine.backends import train_placement
from engine.backends.train_placement import StopWhenNoRoom
from engine.config import GenerationConfig
from engine.errors import PlacementError, StageError
from engine.generation import replica_backend, vllm_replicas
from engine.generation.backend import build_generator
from engine.generation.cache import ResponseCache
from engine.generation.pipeline import RESUMES
from engine.generation.replica_backend import ReplicaBackend
from engine.generation.vllm_replicas import ReplicaClient
from engine.placement import no_room
from tests.fakes import answered
from tests.unit.test_side_by_side import FakePool


def requests(n: int) -> pa.Table:
    return pa.table({"request_id": [f"r{i}" for i in range(n)],
                     "messages": [f'[{{"content": "{i}"}}]' for i in range(n)],
                     "sampling": ['{"temperature": 0}'] * n})


def run(monkeypatch, tmp_path, passes):
    """The pipeline over 6 requests, each generation pass played by the next of `passes`
    (a function of the pass's requests and the pipeline's cache that yields batches);
    returns (output rows, requests of each pass, log lines)."""
    monkeypatch.setattr(replica_backend, "ReplicaPool", FakePool)
    asked, log = [], []

    def fake_batches(self, reqs, model, group, cache):
        asked.append(reqs.column("request_id").to_pylist())
        yield from passes[len(asked) - 1](reqs, cache)

    monkeypatch.setattr(ReplicaBackend, "batches", fake_batches)
    pipeline = build_generator(GenerationConfig(model="m"), seed=0,
                                  cache=ResponseCache(str(tmp_path / "cache")), log=log.append)
    return pipeline(requests(6), "teacher", "augment").to_pylist(), asked, log


def node_lost(reqs, cache):
    """Two rows reach the driver, a third is stored by its worker, then the node is lost."""
    import ray.exceptions

    yield answered(reqs.slice(0, 2))
    cache.store(reqs.slice(2, 1), answered(reqs.slice(2, 1)))
    raise ray.exceptions.NodeDiedError("the node holding the blocks died")


def the_rest(reqs, cache):
    yield answered(reqs)


def test_a_pass_the_cluster_breaks_goes_on_with_the_rows_not_answered(monkeypatch, tmp_path):
    out, asked, log = run(monkeypatch, tmp_path, [node_lost, the_rest])
    assert [r["output"] for r in out] == ["ok"] * 6 and not any(r["error"] for r in out)
    # the second pass asks only for what neither reached the driver nor was stored
    assert asked == [[f"r{i}" for i in range(6)], ["r3", "r4", "r5"]]
    assert [r["cached"] for r in out] == [False, False, True, False, False, False]
    assert any("the cluster broke the generation pass" in m and "(3 of 6 done)" in m
               for m in log), log


def lost_at_once(reqs, cache):
    import ray.exceptions

    raise ray.exceptions.NodeDiedError("the node holding the blocks died")
    yield


def test_a_pass_broken_every_time_stops_the_stage_with_the_answers_kept(monkeypatch, tmp_path):
    with pytest.raises(StageError, match=r"generation stopped: .*node holding the blocks died.*"
                                         r"The 3 rows answered so far are in the response "
                                         r"cache: run the same command again"):
        run(monkeypatch, tmp_path, [node_lost] + [lost_at_once] * RESUMES + [the_rest])


def test_an_error_that_is_not_the_clusters_is_not_retried(monkeypatch, tmp_path):
    def bad(reqs, cache):
        raise ValueError("a bug in a worker")
        yield

    calls = [bad, the_rest]
    with pytest.raises(StageError, match="a bug in a worker"):
        run(monkeypatch, tmp_path, calls)


def test_no_room_after_a_node_loss_stops_the_stage_with_its_message(monkeypatch, tmp_path):
    import ray.exceptions

    message = "the vLLM replicas of m (2 of 1 CPU each) lost its node, and ..."

    def no_room_left(reqs, cache):
        yield answered(reqs.slice(0, 1))
        # as it reaches the driver from a replica client, inside Ray Data's wrapping
        worker = ray.exceptions.RayTaskError("ReplicaClient.__call__", "Traceback ...",
                                             PlacementError(message)).as_instanceof_cause()
        raise RuntimeError("Ray Data: a task failed") from worker

    with pytest.raises(StageError) as caught:
        run(monkeypatch, tmp_path, [no_room_left, the_rest])
    assert str(caught.value) == (f"[augment] {message}; the 1 rows answered so far are in the "
                                 f"response cache: run the same command again to resume")


def test_no_room_message_names_what_is_left_and_the_fixes():
    nodes = [{"CPU": 2.0, "memory": 8 * 2 ** 30}]
    text = no_room("training", {"CPU": 2.0}, 2, 612.4, "lower train.num_workers", nodes)
    assert text == ("training (2 of 2 CPU each) lost its node, and the 1 node(s) left cannot "
                    "hold it (2 CPU and 0 GPU in all, the largest node 2 CPU, 0 GPU, 8.0 GiB "
                    "memory for tasks); no node came within 612s: add a node, or lower "
                    "train.num_workers")


# -- a replica client waiting on a replica whose node was lost ---------------------------------
class Remote:
    def __init__(self, fn):
        self.remote = fn


class FakeRouter:
    """place() answers from a script: one answer a check, the last one repeated."""

    def __init__(self, places):
        self.places, self.checks = list(places), 0
        self.place = Remote(self._place)
        self.no_room = Remote(lambda waited: f"no room after {waited:.2f}s")

    def _place(self, index):
        self.checks += 1
        return self.places.pop(0) if len(self.places) > 1 else self.places[0]


class FakeReplica:
    """stalled_s answers `stalled` (seconds its engine went without progress); NO_ANSWER: the
    question times out, as for a replica whose process hangs."""

    def __init__(self, stalled):
        method = Remote(lambda: stalled)
        method.options = lambda **kw: method
        self.stalled_s = method


NO_ANSWER = "NO_ANSWER"


def fake_ray_get(answer_after_checks=None, router=None):
    """ray.get over plain values, where the answer ref ("ANSWER") times out each time, until
    the router has been checked `answer_after_checks` times."""
    import ray.exceptions

    def get(ref, timeout=None):
        if ref in ("ANSWER", NO_ANSWER):
            time.sleep(timeout or 0)
            if ref == "ANSWER" and answer_after_checks is not None and \
                    router.checks >= answer_after_checks:
                return "rows"
            raise ray.exceptions.GetTimeoutError("not yet")
        return ref

    return get


@pytest.fixture
def quick_checks(monkeypatch):
    monkeypatch.setattr(vllm_replicas, "CHECK_EVERY_S", 0.01)


def test_a_replica_without_a_place_on_nodes_too_small_stops_with_placement_error(
        monkeypatch, quick_checks):
    import ray

    router = FakeRouter(["no room"])
    monkeypatch.setattr(ray, "get", fake_ray_get())
    client = ReplicaClient(router, stall_timeout_s=0.05, placement_timeout_s=0.1)
    with pytest.raises(PlacementError, match=r"no room after 0\.1\ds"):
        client._wait(0, "ANSWER", FakeReplica(NO_ANSWER))
    # no stall was counted meanwhile (0.05 s): a replica without a place is not hung
    assert router.checks >= 5


def test_a_replica_waiting_for_room_other_work_holds_waits_then_answers(
        monkeypatch, quick_checks):
    import ray

    # without a place for longer than both timeouts, but the nodes could hold the pool:
    # other work holds the room, so the client waits on; then the replica is back and answers
    router = FakeRouter(["waiting"] * 30 + ["placed"])
    monkeypatch.setattr(ray, "get", fake_ray_get(answer_after_checks=31, router=router))
    client = ReplicaClient(router, stall_timeout_s=0.05, placement_timeout_s=0.05)
    assert client._wait(0, "ANSWER", FakeReplica(NO_ANSWER)) == "rows"


@pytest.mark.parametrize("stalled", [NO_ANSWER, 1e9], ids=["no answer", "engine stuck"])
def test_a_replica_in_its_place_without_progress_is_hung(monkeypatch, quick_checks, stalled):
    import ray

    router = FakeRouter(["placed"])
    monkeypatch.setattr(ray, "get", fake_ray_get())
    client = ReplicaClient(router, stall_timeout_s=0.05, placement_timeout_s=10)
    with pytest.raises(ray.exceptions.GetTimeoutError):
        client._wait(0, "ANSWER", FakeReplica(stalled))


def test_a_call_waiting_behind_others_on_a_busy_engine_is_not_hung(monkeypatch, quick_checks):
    import ray

    # the call waits 40 checks, far past stall_timeout_s, but the engine keeps stepping
    router = FakeRouter(["placed"])
    monkeypatch.setattr(ray, "get", fake_ray_get(answer_after_checks=40, router=router))
    client = ReplicaClient(router, stall_timeout_s=0.05, placement_timeout_s=10)
    assert client._wait(0, "ANSWER", FakeReplica(0.001)) == "rows"


# -- Ray Train's worker group after a lost node -------------------------------------------------
def test_training_waits_while_the_cluster_could_hold_it_and_stops_once_it_cannot(monkeypatch):
    holds, clock = [True], [1000.0]
    monkeypatch.setattr(train_placement, "cluster_holds", lambda bundles: holds[0])
    monkeypatch.setattr(train_placement.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(train_placement, "no_room",
                        lambda what, bundle, n, waited, fixes: f"{what} {n} {waited:.0f}s")
    hook = StopWhenNoRoom({"CPU": 1.0}, 2, timeout_s=600)
    for _ in range(20):  # busy nodes: each minute's failed try is waited out
        hook.before_controller_execute_failure_decision("RETRY")
        clock[0] += 60
    holds[0] = False  # the node is lost: the cluster left cannot hold two workers
    for _ in range(10):  # 0..540 s without room: waits on (an autoscaler may add a node)
        hook.before_controller_execute_failure_decision("RETRY")
        clock[0] += 60
    with pytest.raises(PlacementError, match="training 2 600s"):
        hook.before_controller_execute_failure_decision("RETRY")


def test_the_no_room_error_survives_ray_trains_wrapping():
    import pickle

    from ray.train.v2.api.exceptions import ControllerError

    # how it reaches the trainer's fit(): in Ray Train's ControllerError, across processes
    error = pickle.loads(pickle.dumps(ControllerError(PlacementError("training ... no room"))))
    assert isinstance(error.controller_failure, PlacementError)
    assert str(error.controller_failure) == "training ... no room"
