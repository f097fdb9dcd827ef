"""The replica's continuous batch (engine/generation/continuous_batch.py) against a fake engine
that runs `max_num_seqs` requests per step, each for as many steps as its params say."""

import threading
import time

import pytest

from engine.generation.continuous_batch import ContinuousBatch


class _Out:
    def __init__(self, request_id: str, text: str):
        self.request_id, self.text, self.finished = request_id, text, True


class FakeEngine:
    """vLLM's LLM as the batch uses it: enqueue_chat adds (internal id "<n>-<suffix>"),
    llm_engine.step runs the first max_num_seqs unfinished requests one token each."""

    def __init__(self, max_num_seqs: int = 4, fail_at_step: int | None = None,
                 answer_ids=str):
        self.max_num_seqs, self.fail_at_step = max_num_seqs, fail_at_step
        self.answer_ids = answer_ids  # how outputs name a request (vLLM: its external id)
        self.queue: list[list] = []  # [external id, steps left, text], in arrival order
        self.steps, self.n = 0, 0
        self.added: list = []  # conversations, in the order they entered the engine
        self.most_queued = 0  # the most requests the engine held at once
        self.llm_engine = self

    def enqueue_chat(self, conversations, params, use_tqdm=True):
        (conversation,), (steps,) = conversations, params
        if conversation == "too long":
            raise ValueError("prompt longer than max_model_len")
        if conversation == "explode":
            raise RuntimeError("engine core unreachable")
        self.n += 1
        self.added.append(conversation)
        self.queue.append([str(self.n), steps, f"answer to {conversation}"])
        self.most_queued = max(self.most_queued, len(self.queue))
        return [f"{self.n}-a1b2c3d4"]

    def has_unfinished_requests(self) -> bool:
        return bool(self.queue)

    def step(self):
        time.sleep(0.005)  # let callers' threads in between steps
        self.steps += 1
        if self.fail_at_step is not None and self.steps > self.fail_at_step:
            time.sleep(3600)  # as vLLM: an engine error is handed to one step, then none come
        if self.steps == self.fail_at_step:
            raise RuntimeError("engine core died")
        finished = []
        for row in self.queue[:self.max_num_seqs]:
            row[1] -= 1
            if row[1] == 0:
                finished.append(_Out(self.answer_ids(row[0]), row[2]))
        self.queue = [r for r in self.queue if r[1] > 0]
        return finished


def _in_thread(fn, *args):
    box = {}

    def run():
        try:
            box["result"] = fn(*args)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            box["error"] = exc
        box["at"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def _started(batch, engine, conversations, params):
    """A chat call in a thread, returned once the engine holds its rows."""
    added = engine.n + len(conversations)
    thread, box = _in_thread(batch.chat, conversations, params)
    while engine.n < added:
        time.sleep(0.001)
    return thread, box


def test_each_call_gets_its_own_rows_in_order():
    batch = ContinuousBatch(FakeEngine())
    out = batch.chat(["a", "b", "c"], [3, 1, 2])
    assert [o.text for o in out] == ["answer to a", "answer to b", "answer to c"]
    assert batch.busy_s > 0
    assert batch.chat([], []) == []


def test_a_second_call_joins_the_running_batch_instead_of_waiting_for_the_first():
    engine = FakeEngine(max_num_seqs=4)
    batch = ContinuousBatch(engine)
    # the first call: three short rows and one long one; the second comes while it runs
    first, a = _started(batch, engine, ["a1", "a2", "a3", "a4"], [1, 1, 1, 20])
    second, b = _in_thread(batch.chat, ["b1", "b2", "b3", "b4"], [5, 5, 5, 5])
    first.join(), second.join()
    assert [o.text for o in b["result"]] == [f"answer to b{i}" for i in range(1, 5)]
    assert [o.text for o in a["result"]][3] == "answer to a4"
    # the second call's rows took the slots the short rows freed: it finished while the
    # long row still ran, and the whole work took the long row's 20 steps (one call after
    # the other would take 25)
    assert b["at"] < a["at"]
    assert engine.steps == 20


def test_a_full_engine_takes_the_groups_waiting_rows_in_turn():
    engine = FakeEngine(max_num_seqs=2)
    batch = ContinuousBatch(engine, capacity=2)
    # task a's six rows come first and fill the engine; task b's six come while it runs
    first, a = _started(batch, engine, [f"a{i}" for i in range(1, 3)], [2, 2])
    more_a, _ = _in_thread(batch.chat, [f"a{i}" for i in range(3, 7)], [2] * 4, "a")
    while sum(len(rows) for rows in batch._waiting.values()) < 4:
        time.sleep(0.001)
    second, b = _in_thread(batch.chat, [f"b{i}" for i in range(1, 7)], [2] * 6, "b")
    for thread in (first, more_a, second):
        thread.join()
    assert [o.text for o in b["result"]] == [f"answer to b{i}" for i in range(1, 7)]
    assert engine.most_queued == 2  # the rest waited outside the engine
    # a freed slot goes to each task in turn, not to the task that asked first (vLLM's order)
    later = engine.added[2:]
    assert later[:6] in (["a3", "b1", "a4", "b2", "a5", "b3"],
                         ["b1", "a3", "b2", "a4", "b3", "a5"])


def test_without_capacity_every_row_enters_the_engine_at_once():
    engine = FakeEngine(max_num_seqs=2)
    batch = ContinuousBatch(engine)
    batch.chat(["a", "b", "c", "d"], [2, 2, 2, 2])
    assert engine.most_queued == 4


def test_run_waits_for_the_rows_still_waiting_to_enter_the_engine():
    engine = FakeEngine(max_num_seqs=1)
    batch = ContinuousBatch(engine, capacity=1)
    thread, box = _started(batch, engine, ["a"], [3])
    more, more_box = _in_thread(batch.chat, ["b", "c"], [3, 3], "other")
    while not batch._waiting:
        time.sleep(0.001)
    # a weight load must come after every row asked before it, in the engine or not
    assert batch.run(lambda: engine.n) == 3
    thread.join(), more.join()
    assert [o.text for o in more_box["result"]] == ["answer to b", "answer to c"]


def test_a_rejected_request_fails_its_row_only():
    batch = ContinuousBatch(FakeEngine())
    out = batch.chat(["a", "too long", "c"], [1, 1, 2])
    assert isinstance(out[1], ValueError) and "max_model_len" in str(out[1])
    assert [out[0].text, out[2].text] == ["answer to a", "answer to c"]


def test_an_engine_that_breaks_fails_every_waiting_call_and_every_later_one():
    engine = FakeEngine(fail_at_step=3)
    batch = ContinuousBatch(engine)
    calls = [_in_thread(batch.chat, [f"{k}{i}" for i in range(3)], [10, 10, 10]) for k in "xy"]
    for thread, _ in calls:
        thread.join(timeout=10)
    assert all("engine core died" in str(box.get("error")) for _, box in calls)
    # the engine is never stepped again (vLLM's would wait forever): later calls fail at once
    later, box = _in_thread(batch.chat, ["z"], [1])
    later.join(timeout=10)
    assert not later.is_alive() and "engine core died" in str(box["error"])
    with pytest.raises(RuntimeError, match="engine core died"):
        batch.run(lambda: "a weight load")
    assert batch.broken is not None and engine.steps == 3


def test_an_error_adding_a_row_breaks_the_batch_for_every_call():
    engine = FakeEngine()
    batch = ContinuousBatch(engine)
    waiting, box = _started(batch, engine, ["a"], [200])
    with pytest.raises(RuntimeError, match="unreachable"):
        batch.chat(["b", "explode", "c"], [1, 1, 1])
    waiting.join(timeout=10)
    assert "unreachable" in str(box["error"])


def test_an_answer_no_call_waits_for_breaks_the_batch_instead_of_hanging_its_caller():
    batch = ContinuousBatch(FakeEngine(answer_ids=lambda rid: f"req-{rid}"))
    call, box = _in_thread(batch.chat, ["a"], [2])
    call.join(timeout=10)
    assert not call.is_alive() and "which no call waits for" in str(box["error"])


def test_stalled_is_zero_while_idle_and_grows_while_the_engine_thread_is_stuck():
    batch = ContinuousBatch(FakeEngine())
    assert batch.chat(["a"], [3])[0].text == "answer to a"
    time.sleep(0.2)
    assert batch.stalled_s() == 0.0  # idle, however long: not stalled
    stuck, _ = _in_thread(batch.run, lambda: time.sleep(0.5))  # a hung engine, for a while
    time.sleep(0.3)
    assert 0.2 < batch.stalled_s() < 0.5
    stuck.join()
    time.sleep(0.05)
    assert batch.stalled_s() == 0.0


def test_conversations_and_params_must_pair_up():
    with pytest.raises(ValueError, match="2 conversations but 1 sampling params"):
        ContinuousBatch(FakeEngine()).chat(["a", "b"], [1])


def test_run_waits_for_the_rows_in_flight():
    engine = FakeEngine()
    batch = ContinuousBatch(engine)
    call, box = _started(batch, engine, ["a"], [15])
    assert batch.run(lambda: len(engine.queue)) == 0  # a weight load never runs under a row
    call.join()
    assert box["result"][0].text == "answer to a"
    with pytest.raises(KeyError):
        batch.run(lambda: {}["missing"])  # the caller gets fn's error; the thread lives on
    assert batch.chat(["z"], [1])[0].text == "answer to z"


def test_replica_turns_a_rejected_request_into_an_error_row():
    from vllm.exceptions import VLLMValidationError

    from engine.generation.vllm_replicas import VLLMReplica, _rejects

    row = VLLMReplica._row(ValueError("prompt of 5000 tokens is longer than 2048"))
    assert row["output"] == "" and row["error"].startswith("request rejected: prompt of 5000")
    # vLLM's own error for a prompt longer than max_model_len is no ValueError
    assert issubclass(VLLMValidationError, _rejects())


def test_replica_never_takes_an_aborted_request_for_an_answer():
    from types import SimpleNamespace

    from engine.generation.vllm_replicas import VLLMReplica

    out = SimpleNamespace(prompt_token_ids=[1, 2], outputs=[SimpleNamespace(
        text="", token_ids=[], finish_reason="abort")])
    assert VLLMReplica._row(out)["error"] == "the engine ended the request: abort"
    out.outputs[0].finish_reason, out.outputs[0].text, out.outputs[0].token_ids = "stop", "hi", [5]
    assert VLLMReplica._row(out) == {"output": "hi", "prompt_tokens": 2, "completion_tokens": 1,
                                     "error": ""}
