"""A teacher behind an OpenAI-compatible chat completions API: a Ray Data UDF, and the
backend (`ApiBackend`) that runs it.

Each batch's rows run on a thread pool (`concurrency` requests in flight). Every request start
goes through a `RequestPacer`, so the configured requests- and tokens-per-minute are never
exceeded. 429, 5xx, time-outs, connection errors and unreadable bodies are retried with
exponential backoff and jitter (a `Retry-After` header wins); any other 4xx is final. A row
that still fails becomes data: its `error` column says why, and `attempts` counts the calls.

The API key is read from the environment variable the config names, wrapped in `Secret` so it
never prints, and scrubbed from any error text a server echoes back.
"""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager

import pyarrow as pa

from engine.config import ApiConfig, TeacherConfig
from engine.generation.backend import blocks_dataset
from engine.generation.cache import ResponseCache
from engine.records import GENERATED, GENERATION_INPUT
from engine.sampling import api_params

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class Secret:
    """A string that does not show itself in reprs, logs or tracebacks."""

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class RequestPacer:
    """Spaces request starts evenly: at most `rpm` requests and `tpm` tokens per minute over
    any interval, with no bursts. A request reserves its estimated tokens up front; if its
    real usage was higher, the difference delays the requests after it.

    Requests pass the gate one at a time and the next gap counts from when the last one really
    left, not from when it was due: threads that all wake late (a busy machine) would otherwise
    start together, a burst over the limit that a strict server answers with 429s."""

    def __init__(self, rpm: float | None, tpm: float | None, clock=time.monotonic,
                 sleep=time.sleep):
        self.rpm, self.tpm = rpm, tpm
        self.clock, self.sleep = clock, sleep
        self.next_start = 0.0
        self.lock = threading.Lock()  # guards next_start
        self.gate = threading.Lock()  # held by the one request waiting for its start

    def acquire(self, tokens: int) -> None:
        """Block until this request may start."""
        gap = max(60.0 / self.rpm if self.rpm else 0.0,
                  tokens * 60.0 / self.tpm if self.tpm else 0.0)
        with self.gate:
            while True:  # settle() may push next_start on while this request sleeps
                with self.lock:
                    wait = self.next_start - self.clock()
                if wait <= 0:
                    break
                self.sleep(wait)
            with self.lock:
                self.next_start = self.clock() + gap

    def settle(self, estimated: int, actual: int) -> None:
        if self.tpm and actual > estimated:
            with self.lock:
                self.next_start += (actual - estimated) * 60.0 / self.tpm


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None,
                  rng: random.Random = random) -> float:
    """Exponential backoff with jitter: about base * 2^(attempt-1), randomised down to half so
    clients that failed together do not retry together. A server's Retry-After wins."""
    if retry_after is not None:
        return min(retry_after, cap)
    return min(cap, base * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.0)


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class _Final(Exception):
    """A failure that retrying cannot fix (e.g. 400, 401, 404)."""


class OpenAIChatUDF:
    """Ray Data UDF: one chat completion per row, through the pacer, with retries.

    With a cache_dir, answers are stored as they arrive (every STORE_EVERY_S, and at the end
    of the batch): a paid response survives this process, or the driver, being killed.
    """

    STORE_EVERY_S = 2.0

    def __init__(self, api: ApiConfig, model: str, key: Secret | None,
                 share: float = 1.0, cache_dir: str | None = None):
        import httpx

        self.api, self.model, self.key = api, model, key
        self.cache = ResponseCache(cache_dir) if cache_dir else None
        # With several API actors, each takes its share of the limits so the sum stays within.
        self.pacer = RequestPacer(api.requests_per_minute and api.requests_per_minute * share,
                                  api.tokens_per_minute and api.tokens_per_minute * share)
        self.url = api.base_url.rstrip("/") + "/chat/completions"
        self.http = httpx.Client(timeout=api.timeout_s,
                                 limits=httpx.Limits(max_connections=api.concurrency))
        self.pool = ThreadPoolExecutor(api.concurrency)
        self.rng = random.Random()

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = batch.column("request_id").to_pylist()
        futures = {self.pool.submit(self.complete, m, sampling): i
                   for i, (m, sampling) in enumerate(zip(batch.column("messages").to_pylist(),
                                                         batch.column("sampling").to_pylist()))}
        rows: list[dict | None] = [None] * len(ids)
        unstored, last_store = [], time.monotonic()
        for future in as_completed(futures):
            i = futures[future]
            rows[i] = {"request_id": ids[i], **future.result()}
            unstored.append(i)
            if time.monotonic() - last_store >= self.STORE_EVERY_S:
                self._store(batch, rows, unstored)
                unstored, last_store = [], time.monotonic()
        self._store(batch, rows, unstored)
        return pa.Table.from_pylist(rows, schema=GENERATED)

    def _store(self, batch: pa.Table, rows: list, indices: list[int]) -> None:
        if self.cache and indices:
            self.cache.store(batch.take(indices),
                             pa.Table.from_pylist([rows[i] for i in indices], schema=GENERATED))

    def complete(self, messages_json: str, sampling_json: str) -> dict:
        """One request (the row's messages and sampling, as sent), retried; returns a
        GENERATED row without its request_id."""
        sampling = api_params(json.loads(sampling_json))
        body = {"model": self.model, "messages": json.loads(messages_json), **sampling,
                **self.api.extra_body}
        estimate = len(messages_json) // 4 + sampling.get("max_tokens", 0)
        attempts, reason = 0, ""
        while attempts <= self.api.max_retries:
            attempts += 1
            self.pacer.acquire(estimate)
            try:
                row = self._post(body)
                self.pacer.settle(estimate, row["prompt_tokens"] + row["completion_tokens"])
                return {**row, "error": "", "cached": False, "attempts": attempts,
                        "replica": "api"}
            except _Final as exc:
                reason = str(exc)
                break
            except _Retry as exc:
                reason = exc.reason
                if attempts <= self.api.max_retries:
                    time.sleep(backoff_delay(attempts, self.api.backoff_s,
                                             self.api.backoff_max_s, exc.retry_after, self.rng))
        error = f"failed after {attempts} attempt(s): {reason}"
        return {"output": "", "prompt_tokens": 0, "completion_tokens": 0,
                "error": self._scrub(error)[:500], "cached": False, "attempts": attempts,
                "replica": "api"}

    def _post(self, body: dict) -> dict:
        import httpx

        headers = {"Authorization": f"Bearer {self.key.reveal()}"} if self.key else {}
        try:
            resp = self.http.post(self.url, json=body, headers=headers)
        except httpx.TimeoutException:
            raise _Retry(f"timed out after {self.api.timeout_s}s") from None
        except httpx.TransportError as exc:
            raise _Retry(f"connection error: {type(exc).__name__}") from None
        if resp.status_code in RETRYABLE_STATUS:
            raise _Retry(f"HTTP {resp.status_code}", _retry_after(resp))
        if resp.status_code != 200:
            raise _Final(f"HTTP {resp.status_code}: {self._scrub(resp.text)[:300]}")
        try:
            doc = resp.json()
            output = doc["choices"][0]["message"]["content"]
            usage = doc.get("usage") or {}
            if not isinstance(output, str):
                raise TypeError("content is not a string")
            return {"output": output, "prompt_tokens": int(usage.get("prompt_tokens", 0)),
                    "completion_tokens": int(usage.get("completion_tokens", 0))}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise _Retry(f"malformed response body ({type(exc).__name__})") from None

    def _scrub(self, text: str) -> str:
        return self.key.scrub(text) if self.key else text


def _retry_after(resp) -> float | None:
    try:
        return max(0.0, float(resp.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


class ApiBackend:
    """The API backend (engine/generation/backend.py): `teacher.replicas` client actors over
    an OpenAI-compatible API. Nothing to start or stop; `holding` counts the calls using a
    model now, which split its rate limits."""

    caches = True
    columns = tuple(GENERATION_INPUT)

    def __init__(self, cfg: TeacherConfig, key: Secret | None, log=print):
        self.cfg, self.api, self.key, self.log = cfg, cfg.api, key, log
        self.name = f"the API at {cfg.api.base_url}"
        self._users: dict[str, dict[int, int]] = {}  # model -> {thread: depth} using it now
        self._lock = threading.Lock()

    def model_id(self, model: str) -> str:
        """Another server's answers are another model's; `extra_body` goes into every request
        after the row's sampling (it may set the model, temperature or seed), so it is part of
        the id (none: the id keys had before it was covered)."""
        extra = self.api.extra_body
        extra = f"|extra_body={json.dumps(extra, sort_keys=True, default=str)}" if extra else ""
        return f"{self.api.base_url}|{model}{extra}"

    @contextmanager
    def holding(self, model: str):
        """Count this thread as a caller of `model` until the block ends. A thread counts
        once however deep it holds (a long stage holds across its windows, and each pass
        again), so only calls side by side split the rate limit."""
        me = threading.get_ident()
        with self._lock:
            callers = self._users.setdefault(model, {})
            callers[me] = callers.get(me, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                callers[me] -= 1
                if not callers[me]:
                    del callers[me]

    def callers(self, model: str) -> int:
        """The calls (threads) using `model` now."""
        with self._lock:
            return len(self._users.get(model, ()))

    def warm_up(self, model: str) -> None:
        """Nothing to start: the server is up or each row's error says it is not."""

    def shutdown(self) -> None:
        """Nothing held between calls: the client actors end with each pass's dataset."""

    def batches(self, requests: pa.Table, model: str, group: str,
                cache: ResponseCache | None):
        """Yield GENERATED batches as they finish. `group` is unused: the server schedules."""
        import ray

        workers = self.cfg.replicas
        ds, size = blocks_dataset(requests, workers, self.cfg.batch_size)
        ds = ds.map_batches(
            OpenAIChatUDF, batch_size=size, batch_format="pyarrow", num_cpus=0,
            fn_constructor_kwargs={"api": self.api, "model": model, "key": self.key,
                                   # calls at once (tasks side by side) split the rate limit
                                   "share": 1 / (workers * max(1, self.callers(model))),
                                   "cache_dir": str(cache.root) if cache else None},
            compute=ray.data.ActorPoolStrategy(size=workers))
        yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")
