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
    llm_engine.step fills free slots from the waiting rows (arrival order, or lowest
    `priority` first when given, as vLLM's priority scheduling) and runs the first
    max_num_seqs rows one token each.

    `wait_after_step=(k, n)`: after step k the engine says it has nothing to do until n rows
    were added, so the batch waits for the next call (on its own thread, where calls are
    added) before stepping on: a test about a call that comes while another runs must not
    depend on how soon a busy machine schedules the second caller's thread."""

    def __init__(self, max_num_seqs: int = 4, fail_at_step: int | None = None,
                 answer_ids=str, wait_after_step: tuple[int, int] | None = None):
        self.max_num_seqs, self.fail_at_step = max_num_seqs, fail_at_step
        self.wait_after_step = wait_after_step
        self.answer_ids = answer_ids  # how outputs name a request (vLLM: its external id)
        self.running: list[list] = []  # [external id, steps left, text, conversation]
        self.waiting: list[tuple] = []  # (priority, arrival, row)
        self.started: list = []  # conversations, in the order they started running
        self.priorities: dict = {}  # conversation -> the priority it was given, if any
        self.steps, self.n = 0, 0
        self.llm_engine = self

    def enqueue_chat(self, conversations, params, use_tqdm=True, priority=None):
        (conversation,), (steps,) = conversations, params
        if conversation == "too long":
            raise ValueError("prompt longer than max_model_len")
        if conversation == "explode":
            raise RuntimeError("engine core unreachable")
        self.n += 1
        if priority is not None:
            (self.priorities[conversation],) = priority
        self.waiting.append((priority[0] if priority else 0, self.n,
                             [str(self.n), steps, f"answer to {conversation}", conversation]))
        return [f"{self.n}-a1b2c3d4"]

    @property
    def queue(self) -> list:
        return self.running + [row for *_, row in self.waiting]

    def has_unfinished_requests(self) -> bool:
        if self.wait_after_step and self.steps == self.wait_after_step[0] \
                and self.n < self.wait_after_step[1]:
            return False  # idle until the awaited call's rows are in
        return bool(self.running or self.waiting)

    def step(self):
        time.sleep(0.005)  # let callers' threads in between steps
        self.steps += 1
        if self.fail_at_step is not None and self.steps > self.fail_at_step:
            time.sleep(3600)  # as vLLM: an engine error is handed to one step, then none come
        if self.steps == self.fail_at_step:
            raise RuntimeError("engine core died")
        self.waiting.sort(key=lambda w: w[:2])
        while self.waiting and len(self.running) < self.max_num_seqs:
            row = self.waiting.pop(0)[2]
            self.running.append(row)
            self.started.append(row[3])
        finished = []
        for row in self.running:
            row[1] -= 1
            if row[1] == 0:
                finished.append(_Out(self.answer_ids(row[0]), row[2]))
        self.running = [r for r in self.running if r[1] > 0]
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
    engine = FakeEngine(max_num_seqs=4, wait_after_step=(1, 8))
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


def _two_tasks(turns: bool) -> FakeEngine:
    """Task a asks six rows, task b six more once a's are in the engine; returns the engine."""
    engine = FakeEngine(max_num_seqs=2, wait_after_step=(1, 12))
    batch = ContinuousBatch(engine, turns=turns)
    first, _ = _in_thread(batch.chat, [f"a{i}" for i in range(1, 7)], [2] * 6, "a")
    while engine.n < 6:
        time.sleep(0.001)
    second, b = _in_thread(batch.chat, [f"b{i}" for i in range(1, 7)], [2] * 6, "b")
    first.join(), second.join()
    assert [o.text for o in b["result"]] == [f"answer to b{i}" for i in range(1, 7)]
    return engine


def test_with_turns_tasks_sharing_the_engine_take_turns_and_end_together():
    engine = _two_tasks(turns=True)
    # b's rows are numbered from where the batch had got to (a's rows in the engine), so
    # they start between a's waiting rows instead of after all of them; the two tasks end
    # together
    assert [c[0] for c in engine.started[-2:]] in (["a", "b"], ["b", "a"])
    assert engine.priorities["b1"] == engine.priorities["a1"] == 0


def test_without_turns_the_engine_serves_rows_in_arrival_order():
    engine = _two_tasks(turns=False)
    assert engine.started == [f"a{i}" for i in range(1, 7)] + [f"b{i}" for i in range(1, 7)]
    assert engine.priorities == {}  # vLLM's default (fcfs) scheduler takes no priorities


def test_a_task_back_after_a_pause_starts_level_with_the_others_not_ahead():
    engine = FakeEngine(max_num_seqs=2)
    batch = ContinuousBatch(engine, turns=True)
    batch.chat(["a1", "a2", "a3"], [1, 1, 1], "a")
    batch.chat(["a4", "a5"], [1, 1], "a")
    batch.chat(["b1"], [1], "b")  # b's first row: after a's five, not before them
    assert [engine.priorities[c] for c in ("a1", "a4", "a5", "b1")] == [0, 3, 4, 5]


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
