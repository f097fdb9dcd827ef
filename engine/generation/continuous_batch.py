"""One continuous batch per vLLM engine, fed by every call a replica serves at once.

Why: `LLM.chat` answers one Ray Data block and returns; while its last rows decode the batch
thins out (rows end at different lengths), and the next block waits in Ray's queue until the
call is back, its conversations rendered only then. Here a replica's calls (the two clients
each pipeline gives it, and other tasks' pipelines sharing the pool) hand their requests to one
engine thread that adds them to the running batch at once and steps the engine while any is
unfinished, so a block's rows start as soon as the engine has a free slot, not when the block
before has ended. It is what vLLM's own server does (AsyncLLM), kept on the offline `LLM` that
the replica already uses for weight reloads and the chat template.

With `turns` (the engine made with vLLM's `scheduling_policy="priority"`), the groups whose
rows share the batch (the job's units: a task with its seed) take turns: a call's rows are
numbered on from where its group left off, or from where the batch has got to if that is
further, and vLLM starts waiting rows lowest number first. Without it vLLM serves rows in
arrival order, and of two tasks through one replica the one whose blocks came first kept more
of the batch: answers of natural length, 283 s and 231 s in arrival order, 277 s and 277 s in
turns (benchmarks/generate.py --tasks 2 --stop-at-eos). The numbers only order the waiting
rows; a running row is never stopped for them (vLLM preempts only when its KV cache is full).
Holding rows back here instead, admitting them in turns as slots free, was tried: one task's
ratio against plain LLM.chat fell to 0.849 (one run; 0.96 otherwise), since vLLM's engine core
steps in a process of its own and each freed slot waited for this thread to see it and render
the next prompt.

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
                 turns: bool = False):
        self.llm, self.rejects, self.turns = llm, rejects, turns
        self.busy_s = 0.0  # seconds spent in engine steps
        self.first_step_at: float | None = None  # time.time() of the first step
        self.broken: BaseException | None = None  # what broke the engine, if anything did
        self._jobs: queue.Queue = queue.Queue()  # functions run on the engine thread
        # vLLM request id -> (call, index, the row's number in its group's turn)
        self._rows: dict[str, tuple[_Call, int, int]] = {}
        self._next: dict[str, int] = {}  # group -> the number its next row gets
        self._idle = True  # the engine thread waits for work (so it is not stalled)
        self._progress_at = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="vllm-engine", daemon=True)
        self._thread.start()

    def chat(self, conversations: list, params: list, group: str = "", lora=None) -> list:
        """One result per conversation, in order: vLLM's RequestOutput, or the error that
        rejected that request (one of `rejects`). Raises what broke the engine, if anything
        did. `group`: whose rows these are (with `turns`, the groups take turns). `lora`: a
        vLLM LoRARequest every conversation is answered with (a LoRA student's adapter)."""
        if len(conversations) != len(params):
            raise ValueError(f"{len(conversations)} conversations but {len(params)} "
                             f"sampling params: one each")
        call = _Call(len(conversations))
        self._jobs.put(lambda: self._add(call, group, conversations, params, lora))
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
        if self.broken is not None or not engine.has_unfinished_requests():
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
            call, index, _ = self._rows.pop(out.request_id)
            call.finish(index, out)

    def _drain(self) -> None:
        while self.broken is None and self.llm.llm_engine.has_unfinished_requests():
            self._step()

    def _add(self, call: _Call, group: str, conversations: list, params: list,
             lora=None) -> None:
        if self.broken is not None:
            call.fail(self.broken)
            return
        start = 0
        if self.turns:
            start = max(self._next.get(group, 0), self._reached())
            self._next[group] = start + len(conversations)
        try:
            for index, (conversation, p) in enumerate(zip(conversations, params)):
                options = {"priority": [start + index]} if self.turns else {}
                if lora is not None:
                    options["lora_request"] = lora
                try:
                    (request_id,) = self.llm.enqueue_chat([conversation], [p], use_tqdm=False,
                                                          **options)
                except self.rejects as exc:  # this request is bad; the engine is fine
                    call.finish(index, exc)
                    continue
                # vLLM answers under the id it was given (a counter, no "-" in it);
                # enqueue_chat returns its internal form, that id + "-" + a random suffix
                self._rows[request_id.split("-", 1)[0]] = (call, index, start + index)
                self._progressed()
        except BaseException as exc:  # noqa: BLE001 - e.g. the engine died: nothing is safe
            call.fail(exc)
            self._break(exc)

    def _reached(self) -> int:
        """Where the batch has got to: the lowest number among the rows in the engine; with
        none, the highest number given (a group back after a pause starts level with the
        others, with no credit for the time it was away)."""
        if self._rows:
            return min(number for _, _, number in self._rows.values())
        return max(self._next.values(), default=0)

    def _break(self, exc: BaseException) -> None:
        """The engine is in an unknown state: fail every call waiting, and every later one."""
        self.broken = self.broken or exc
        calls = {id(call): call for call, _, _ in self._rows.values()}
        self._rows.clear()
        for call in calls.values():
            call.fail(self.broken)

    def _progressed(self) -> None:
        self._progress_at = time.monotonic()
