"""One continuous batch per vLLM engine, fed by every call a replica serves at once.

Why: `LLM.chat` answers one Ray Data block and returns; while its last rows decode the batch
thins out (rows end at different lengths), and the next block waits in Ray's queue until the
call is back, its conversations rendered only then. Here a replica's calls (the two clients
each pipeline gives it, and other tasks' pipelines sharing the pool) hand their requests to one
engine thread that adds them to the running batch at once and steps the engine while any is
unfinished, so a block's rows start as soon as the engine has a free slot, not when the block
before has ended. It is what vLLM's own server does (AsyncLLM), kept on the offline `LLM` that
the replica already uses for weight reloads and the chat template.

With a `capacity` (the engine's max_num_seqs), rows beyond it wait here, queued per group (a
unit of the job: a task with its seed), and each slot that frees goes to the next group in
turn. vLLM serves rows in arrival order, so without this the task whose blocks came first keeps
more of the batch: two equal tasks through one replica, answers of natural length, finished
after 283 s and 231 s in arrival order, 286 s and 286 s in turns (benchmarks/generate.py
--tasks 2 --stop-at-eos). The first wave still goes to whoever came first (no preemption).

Only the engine thread touches the engine (vLLM's LLM is not thread-safe); callers wait on
their own event. Each row is added on its own, so a bad request (prompt longer than
max_model_len) fails its row only. Any other error adding or stepping leaves the engine in an
unknown state (vLLM hands an engine error to one step, then waits forever): the batch is
`broken`, every call waiting and every later one fails with that error, and the replica exits
so that Ray starts it again (engine/generation/vllm_replicas.py).

`stalled_s` tells a hung engine from a busy one: the seconds since the engine thread last made
progress (a step, a row added, a job done) while it had work. A call's own wait says nothing
about it once many calls share the batch.
"""

from __future__ import annotations

import collections
import queue
import threading
import time


class _Call:
    """One caller's rows: results fill in by index as the engine finishes them."""

    def __init__(self, n: int):
        self.results: list = [None] * n
        self.left = n
        self.error: BaseException | None = None
        self.done = threading.Event()
        if n == 0:
            self.done.set()

    def finish(self, index: int, result) -> None:
        self.results[index] = result
        self.left -= 1
        if self.left == 0:
            self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


class ContinuousBatch:
    """Owns `llm` (a vllm.LLM, or anything with its `enqueue_chat` and `llm_engine`) from a
    background thread. `chat` is safe to call from many threads at once. `rejects`: the
    errors by which the engine turns down a request (the request is bad, not the engine)."""

    def __init__(self, llm, rejects: tuple[type[BaseException], ...] = (ValueError,),
                 capacity: int | None = None):
        self.llm, self.rejects = llm, rejects
        # Rows in the engine at once (its max_num_seqs); more wait here, and are admitted
        # round-robin between the callers' groups (tasks): vLLM itself serves rows in arrival
        # order, so a task whose blocks came first would keep more of the batch.
        self.capacity = capacity
        self.busy_s = 0.0  # seconds spent in engine steps
        self.first_step_at: float | None = None  # time.time() of the first step
        self.broken: BaseException | None = None  # what broke the engine, if anything did
        self._jobs: queue.Queue = queue.Queue()  # functions run on the engine thread
        self._rows: dict[str, tuple[_Call, int]] = {}  # vLLM request id -> (call, index)
        # group -> rows not in the engine yet, (call, index, conversation, params), in order;
        # the dict's order is the round-robin's (a group served moves to the back)
        self._waiting: dict[str, collections.deque] = {}
        self._idle = True  # the engine thread waits for work (so it is not stalled)
        self._progress_at = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="vllm-engine", daemon=True)
        self._thread.start()

    def chat(self, conversations: list, params: list, group: str = "") -> list:
        """One result per conversation, in order: vLLM's RequestOutput, or the error that
        rejected that request (one of `rejects`). Raises what broke the engine, if anything
        did. `group`: whose rows these are (a task's stage); a full engine takes the groups'
        waiting rows in turn."""
        if len(conversations) != len(params):
            raise ValueError(f"{len(conversations)} conversations but {len(params)} "
                             f"sampling params: one each")
        call = _Call(len(conversations))
        self._jobs.put(lambda: self._queue(call, group, conversations, params))
        return self._wait(call)

    def run(self, fn):
        """fn() on the engine thread once the requests in flight have finished (a weight
        load must not change the model under a running request); returns its result."""
        call = _Call(1)

        def job():
            try:
                self._drain()
            except BaseException as exc:  # noqa: BLE001 - e.g. an unknown finished request
                self._break(exc)
            if self.broken is not None:
                call.fail(self.broken)
                return
            try:
                call.finish(0, fn())
            except Exception as exc:  # noqa: BLE001 - fn's own error, handed to the caller
                call.fail(exc)

        self._jobs.put(job)
        return self._wait(call)[0]

    def stalled_s(self) -> float:
        """Seconds the engine thread has had work without making progress (0 when idle)."""
        return 0.0 if self._idle else time.monotonic() - self._progress_at

    @staticmethod
    def _wait(call: _Call) -> list:
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.results

    # -- the engine thread ------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            try:
                self._turn()
            except BaseException as exc:  # noqa: BLE001 - the thread must live to fail callers
                self._break(exc)

    def _turn(self) -> None:
        """Take the calls that came, then one engine step."""
        engine = self.llm.llm_engine
        if self.broken is not None or not (self._waiting or engine.has_unfinished_requests()):
            self._idle = True
            job = self._jobs.get()  # nothing to run: sleep until a call comes
            self._idle = False
            self._progressed()
            job()
        while True:  # every call that came meanwhile joins the batch before the next step
            try:
                self._jobs.get_nowait()()
            except queue.Empty:
                break
        self._admit()
        if self.broken is None and engine.has_unfinished_requests():
            self._step()

    def _step(self) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.time()
        start = time.perf_counter()
        try:
            outputs = self.llm.llm_engine.step()
        except BaseException as exc:  # noqa: BLE001 - the engine broke: every waiter learns it
            self._break(exc)
            return
        finally:
            self.busy_s += time.perf_counter() - start
        self._progressed()
        for out in outputs:
            if not out.finished:
                continue
            if out.request_id not in self._rows:  # never silently: its caller would wait forever
                raise RuntimeError(f"vLLM finished request {out.request_id!r}, which no call "
                                   f"waits for (request ids are not what this module expects)")
            call, index = self._rows.pop(out.request_id)
            call.finish(index, out)

    def _drain(self) -> None:
        """Run every row, the waiting ones too (they were asked of the model loaded now)."""
        while self.broken is None and (self._waiting
                                       or self.llm.llm_engine.has_unfinished_requests()):
            self._admit()
            if self.llm.llm_engine.has_unfinished_requests():
                self._step()

    def _queue(self, call: _Call, group: str, conversations: list, params: list) -> None:
        if self.broken is not None:
            call.fail(self.broken)
            return
        rows = self._waiting.setdefault(group, collections.deque())
        rows.extend((call, index, conversation, p)
                    for index, (conversation, p) in enumerate(zip(conversations, params)))
        if not rows:
            del self._waiting[group]

    def _admit(self) -> None:
        """Waiting rows into the engine while it has room, a row from each group in turn."""
        while self.broken is None and self._waiting and (
                self.capacity is None or len(self._rows) < self.capacity):
            group = next(iter(self._waiting))
            rows = self._waiting.pop(group)
            call, index, conversation, p = rows.popleft()
            if rows:
                self._waiting[group] = rows  # to the back of the turn
            self._add(call, index, conversation, p)

    def _add(self, call: _Call, index: int, conversation, p) -> None:
        try:
            (request_id,) = self.llm.enqueue_chat([conversation], [p], use_tqdm=False)
        except self.rejects as exc:  # this request is bad; the engine is fine
            call.finish(index, exc)
            return
        except BaseException as exc:  # noqa: BLE001 - e.g. the engine died: nothing is safe
            call.fail(exc)
            self._break(exc)
            return
        # vLLM answers under the id it was given (a counter, no "-" in it); enqueue_chat
        # returns its internal form, that id + "-" + a random suffix
        self._rows[request_id.split("-", 1)[0]] = (call, index)
        self._progressed()

    def _break(self, exc: BaseException) -> None:
        """The engine is in an unknown state: fail every call waiting, and every later one."""
        self.broken = self.broken or exc
        calls = {id(call): call for call, _ in self._rows.values()}
        calls.update((id(row[0]), row[0]) for rows in self._waiting.values() for row in rows)
        self._rows.clear()
        self._waiting.clear()
        for call in calls.values():
            call.fail(self.broken)

    def _progressed(self) -> None:
        self._progress_at = time.monotonic()
