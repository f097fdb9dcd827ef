"""The generation pipeline every stage uses: cache, then Ray Data over vLLM replicas or an API.

    requests -> cache lookup -> misses in blocks -> Ray Data map_batches
             -> the workers write each answer to the cache as it arrives -> rows in request order

Because the worker that receives an answer stores it at once, a crash, a pre-empted node, a
killed driver or a failed stage loses only the requests in flight: running the stage again
generates (and pays for) only the rows that never came back. A pass the cluster breaks
(a lost node took a worker or the blocks it held) is started again at once, within the call,
for the rows not yet answered.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager

import pyarrow as pa

from engine.config import GenerationConfig, TeacherConfig
from engine.console import eta, progress
from engine.errors import ModelError, PlacementError, StageError, in_chain, root_cause
from engine.generation.cache import CACHE_KEY, ResponseCache, cache_key, model_fingerprint
from engine.generation.openai_api import OpenAIChatUDF, Secret
from engine.generation.vllm_replicas import ReplicaClient, ReplicaPool
from engine.generation.weight_reload import same_architecture
from engine.metrics import generation_usage
from engine.records import GENERATED, GENERATION_INPUT, require_columns

# Passes of one call started again after the cluster broke one (a lost node); the rows
# answered before stay answered, so each pass asks only for the rest.
RESUMES = 2


class GenerationPipeline:
    """TextGenerator (engine/backends/__init__.py) for one role, student or teacher.

    Safe to call from several threads at once (tasks running side by side, engine/driver.py):
    calls for the same model share one replica pool, started by the first and shut down
    after the last (unless `keep_warm`); calls for different models get a pool each. A warm
    pool no call is using serves a new model of the same architecture by loading its weights
    (each round's student), instead of a new pool starting."""

    def __init__(self, cfg: GenerationConfig, seed: int, cache: ResponseCache | None = None,
                 api_key: Secret | None = None, log=print):
        self.cfg, self.seed, self.cache, self.api_key, self.log = cfg, seed, cache, api_key, log
        self.api = cfg.api if isinstance(cfg, TeacherConfig) else None
        self._pools: dict[str, ReplicaPool] = {}  # model -> its running replicas
        self._users: dict[str, int] = {}  # model -> calls using its pool now
        self._starting: dict[str, threading.Lock] = {}  # model -> held while its pool starts
        # cache key -> (the `done` dict of the call generating it, set when that call ends)
        self._inflight: dict[str, tuple[dict, threading.Event]] = {}
        self._lock = threading.Lock()  # guards these dicts, never held while waiting
        self._waiting = 0  # pools starting now (each may wait for the cluster to have room)
        self._latest: str | None = None

    @property
    def pool(self) -> ReplicaPool | None:
        """The replica pool of the model started last, if it is still running."""
        return self._pools.get(self._latest) if self._latest else None

    def __call__(self, requests: pa.Table, model: str, stage: str, group: str = "") -> pa.Table:
        """The requests' answers by `model`, one row each, in order. `group`: whose rows these
        are (a task's unit); a replica shared by stages side by side serves the groups in turn
        (default: the stage)."""
        require_columns(requests, GENERATION_INPUT, stage)
        group = group or stage
        if requests.num_rows == 0:
            return GENERATED.empty_table()
        start = time.time()
        keys = self._keys(requests, model)
        hits = self.cache.lookup(list(keys.values())) if self.cache else {}
        done = {rid: _cached_row(rid, hits[key]) for rid, key in keys.items() if key in hits}
        # a request another call is generating now (a compare's seeds side by side ask the
        # same seed-synthesis prompts) is not generated twice: its answer is read from the
        # cache once that call has it
        others = self._claim(keys, done)
        try:
            self._generate_missing(requests, model, keys, done, stage, group,
                                   skip=set(others))
        finally:
            self._unclaim(keys, done, others)
        if others:
            for event in others.values():
                event.wait()
            hits = self.cache.lookup(list(others))
            done.update({rid: _cached_row(rid, hits[key]) for rid, key in keys.items()
                         if rid not in done and key in hits})
            self._generate_missing(requests, model, keys, done, stage, group)  # theirs failed
        out = pa.Table.from_pylist([done.get(rid) or _missing_row(rid) for rid in keys],
                                   schema=GENERATED)
        self._log_summary(stage, out, time.time() - start)
        return out

    def _generate_missing(self, requests: pa.Table, model: str, keys: dict[str, str],
                          done: dict[str, dict], stage: str, group: str,
                          skip: set[str] = frozenset()):
        """Generate the requests not yet in `done` (nor with a key in `skip`) into it."""
        for attempt in range(RESUMES + 1):
            misses = requests.filter(pa.array(
                [rid not in done and keys[rid] not in skip
                 for rid in requests.column("request_id").to_pylist()]))
            if not misses.num_rows:
                return
            try:
                with self._replicas(model) as pool:
                    self._generate(misses, model, pool, keys, done, stage, group)
                return
            except ModelError as exc:  # a replica that cannot start: no use retrying
                raise StageError(stage, str(exc)) from None
            except Exception as exc:  # noqa: BLE001 - Ray wraps the cause in many types
                answered = sum(not r["error"] for r in done.values())
                kept = (f"the {answered} rows answered so far are in the response cache: run "
                        f"the same command again to resume")
                no_room = in_chain(exc, PlacementError)
                if no_room is not None:
                    raise StageError(stage, f"{_message(no_room)}; {kept}") from None
                if attempt == RESUMES or in_chain(exc, *_lost_to_the_cluster()) is None:
                    raise StageError(stage, f"generation stopped: {root_cause(exc)}. "
                                            f"{kept[0].upper()}{kept[1:]}") from None
                self._recover_stored(keys, done)
                self.log(f"[{stage}] the cluster broke the generation pass "
                         f"({root_cause(exc)}); going on with the rows not answered yet "
                         f"({len(done)} of {len(keys)} done)")

    def _recover_stored(self, keys: dict[str, str], done: dict[str, dict]) -> None:
        """Rows a worker stored in the cache whose batch never reached this driver (the
        blocks holding it were on a lost node): taken from the cache, not asked again."""
        if self.cache is None:
            return
        todo = {rid: key for rid, key in keys.items() if rid not in done}
        hits = self.cache.lookup(list(todo.values()))
        done.update({rid: _cached_row(rid, hits[key]) for rid, key in todo.items()
                     if key in hits})

    def _claim(self, keys: dict[str, str], done: dict[str, dict]) -> dict[str, threading.Event]:
        """Mark this call's uncached keys as being generated; returns the keys another call
        is generating already, with the event set when it is done with them."""
        if self.cache is None:  # nowhere to read another call's answers from
            return {}
        others = {}
        with self._lock:
            for rid, key in keys.items():
                if rid in done:
                    continue
                if key in self._inflight and self._inflight[key][0] is not done:
                    others[key] = self._inflight[key][1]
                else:
                    self._inflight[key] = (done, threading.Event())
        return others

    def _unclaim(self, keys: dict[str, str], done: dict[str, dict],
                 others: dict[str, threading.Event]) -> None:
        """This call is done with its keys (answered or not): release their waiters."""
        with self._lock:
            for key in set(keys.values()) - set(others):
                owner = self._inflight.get(key)
                if owner is not None and owner[0] is done:
                    del self._inflight[key]
                    owner[1].set()

    def warm_up(self, model: str) -> None:
        """Start the vLLM replicas for `model` now (a no-op for an API or a warm pool); the
        next call for it uses them. Raises ModelError if they cannot start."""
        if self.api:
            return
        with self._lock:
            starting = self._starting.setdefault(model, threading.Lock())
        with starting:
            if model in self._pools:
                return
            pool = self._warm_pool_for(model) if self.cfg.keep_warm else None
            if pool is None:
                with self._lock:
                    self._waiting += 1
                try:
                    self._retire_idle()
                    pool = ReplicaPool(model, self.cfg, self.seed, log=self.log)
                finally:
                    with self._lock:
                        self._waiting -= 1
            with self._lock:
                self._pools[model], self._latest = pool, model

    def _warm_pool_for(self, model: str) -> ReplicaPool | None:
        """A kept-warm pool no call is using whose model has `model`'s architecture and
        tokenizer (last round's student), taken from the idle ones and loaded with `model`'s
        weights; None if there is none (a new pool starts)."""
        with self._lock:
            idle = [m for m in self._pools if not self._users.get(m)]
        fits = [m for m in idle if same_architecture(m, model)]  # reads files: not under lock
        with self._lock:  # still idle? (another call may have taken it meanwhile)
            free = [m for m in fits if m in self._pools and not self._users.get(m)]
            pool = self._pools.pop(free[0]) if free else None
        if pool is not None:
            try:
                pool.reload(model)
            except ModelError as exc:  # the engines are in an unknown state: start afresh
                self.log(f"[replicas] {exc}; starting new replicas")
                pool.shutdown()
                return None
        return pool

    def shutdown(self) -> None:
        """Stop every pool (the job's end)."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown()

    @contextmanager
    def _replicas(self, model: str):
        """The running pool for `model` for the length of one call: started if none runs."""
        with self.holding(model):
            self.warm_up(model)
            yield self._pools.get(model)  # None for an API

    @contextmanager
    def holding(self, model: str):
        """Keep `model`'s pool, once a call starts it, until the block ends (one stage's
        several calls share one engine start). After the last holder it is shut down,
        unless keep_warm. A warm pool is shut down too when another model's pool is starting
        meanwhile: that start may be waiting for the room this pool holds (tasks side by
        side, each with its own student)."""
        with self._lock:
            self._users[model] = self._users.get(model, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._users[model] -= 1
                idle = self._users[model] == 0 and (not self.cfg.keep_warm or self._waiting)
                pool = self._pools.pop(model, None) if idle else None
            if pool is not None:
                pool.shutdown()

    def _retire_idle(self) -> None:
        """Before a new model's pool starts: shut down the warm pools no call is using (a
        kept-warm student of an earlier round), so they do not hold the cluster."""
        with self._lock:
            idle = [m for m in self._pools if not self._users.get(m)]
            pools = [self._pools.pop(m) for m in idle]
        for pool in pools:
            pool.shutdown()

    # -- internals ------------------------------------------------------------------------
    def _keys(self, requests: pa.Table, model: str) -> dict[str, str]:
        """request_id -> cache key, in request order. The key is made from the row itself
        (messages, sampling, regex, sample), as the backend will answer it."""
        model_id = f"{self.api.base_url}|{model}" if self.api else model_fingerprint(model)
        cols = requests.column_names
        regexes = requests.column("regex").to_pylist() if "regex" in cols else [None] * len(requests)
        samples = requests.column("sample").to_pylist() if "sample" in cols else [0] * len(requests)
        return {rid: cache_key(model_id, messages, sampling, self.seed, regex, sample)
                for rid, messages, sampling, regex, sample in zip(
                    requests.column("request_id").to_pylist(),
                    requests.column("messages").to_pylist(),
                    requests.column("sampling").to_pylist(), regexes, samples)}

    def _generate(self, misses: pa.Table, model: str, pool: ReplicaPool | None,
                  keys: dict[str, str], done: dict[str, dict], stage: str, group: str):
        """Generate the rows not in the cache into `done`, showing progress."""
        misses = misses.append_column(CACHE_KEY, pa.array(
            [keys[rid] for rid in misses.column("request_id").to_pylist()], pa.string()))
        tokens, began, cached = 0, time.time(), len(done)
        for batch in self._batches(misses, model, pool, group):
            for r in batch.to_pylist():
                done.setdefault(r["request_id"], r)  # a re-run batch never doubles
            tokens += sum(batch.column("completion_tokens").to_pylist())
            seconds = time.time() - began
            progress(self.log, stage, f"{len(done)}/{len(keys)} rows, "
                     f"{tokens / max(seconds, 1e-9):.0f} tokens/s "
                     f"{eta(len(done) - cached, len(keys) - cached, seconds)}")

    def _batches(self, requests: pa.Table, model: str, pool: ReplicaPool | None,
                 group: str = ""):
        """Yield GENERATED batches as they finish, in whatever order they finish. `group`
        names the rows' owner in a replica's batch (the groups get turns)."""
        import ray

        cfg = self.cfg
        workers = cfg.replicas
        # Blocks cut here (a Ray Data repartition would add a shuffle stage), at most one batch
        # each and at least one per worker, so none sits idle on a small request set.
        size = max(1, min(cfg.batch_size, math.ceil(requests.num_rows / workers)))
        blocks = [requests.slice(i, size) for i in range(0, requests.num_rows, size)]
        # Per-batch progress bars cost driver CPU and flood non-TTY job logs; each stage logs
        # its own summary instead.
        ray.data.DataContext.get_current().enable_progress_bars = False
        # from_blocks, not from_arrow: from_arrow reads each block's metadata in a remote task
        # of 1 CPU, which waits forever on a cluster whose CPUs the replicas and trainings
        # hold (seen after a lost node); from_blocks reads it here
        ds = ray.data.from_blocks(blocks)
        cache_dir = str(self.cache.root) if self.cache else None
        if self.api:
            ds = ds.map_batches(
                OpenAIChatUDF, batch_size=size, batch_format="pyarrow", num_cpus=0,
                fn_constructor_kwargs={"api": self.api, "model": model, "key": self.api_key,
                                       # calls at once (tasks side by side)
                                       # split the API's rate limit
                                       "share": 1 / (workers * max(1, self._users.get(model, 1))),
                                       "cache_dir": cache_dir},
                compute=ray.data.ActorPoolStrategy(size=workers))
        else:
            # Two clients per replica: the next block is already in each engine's running
            # batch when one ends (engine/generation/continuous_batch.py).
            ds = ds.map_batches(
                ReplicaClient, batch_size=size, batch_format="pyarrow", num_cpus=0,
                fn_constructor_kwargs={"router": pool.router, "model": model,
                                       "cache_dir": cache_dir, "group": group,
                                       "stall_timeout_s": cfg.stall_timeout_s,
                                       "placement_timeout_s": cfg.placement_timeout_s,
                                       "max_stalls": cfg.max_stalls},
                compute=ray.data.ActorPoolStrategy(size=2 * workers))
        yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")

    def _log_summary(self, stage: str, out: pa.Table, seconds: float) -> None:
        u = generation_usage(out, prices=None)
        self.log(f"[{stage}] {u['requests']} rows in {seconds:.0f}s: "
                 f"{u['requests'] - u['cached']} generated ({u['completion_tokens']} completion "
                 f"tokens in all), {u['cached']} from cache, {u['failed']} failed, "
                 f"{u['retries']} retries")


def _lost_to_the_cluster() -> tuple[type, ...]:
    """Errors meaning a worker or the node under it went away, or objects with it: the
    cluster's doing, not the request's (a replica's own crash Ray re-runs before it gets
    here)."""
    import ray.exceptions as e

    return (e.RayActorError, e.ObjectLostError, e.NodeDiedError, e.WorkerCrashedError,
            e.LocalRayletDiedError)


def _message(exc: BaseException) -> str:
    """An error's own message, without the traceback Ray adds to a worker's error (a
    RayTaskError carries the worker's error as its `cause`)."""
    cause = getattr(exc, "cause", None)
    return str(cause if isinstance(cause, BaseException) else exc)


def _cached_row(request_id: str, hit: dict) -> dict:
    return {"request_id": request_id, "output": hit["output"],
            "prompt_tokens": hit["prompt_tokens"], "completion_tokens": hit["completion_tokens"],
            "error": "", "cached": True, "attempts": 0, "replica": "cache"}


def _missing_row(request_id: str) -> dict:
    return {"request_id": request_id, "output": "", "prompt_tokens": 0, "completion_tokens": 0,
            "error": "no output came back for this request", "cached": False, "attempts": 0,
            "replica": ""}
