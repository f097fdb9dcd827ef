"""The vLLM backend (engine/generation/backend.py): a warm replica pool per model, and the
Ray Data clients that feed it.

Safe to call from several threads at once (tasks running side by side, engine/driver.py):
calls for the same model share one replica pool, started by the first and shut down after the
last (unless `keep_warm`); calls for different models get a pool each. A warm pool no call is
using serves a new model of the same architecture by loading its weights (each round's
student), instead of a new pool starting. A LoRA adapter (engine/adapters.py) is served by the
pool of its base, each request naming the adapter: no new pool, no weight load.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pyarrow as pa

from engine.adapters import serving
from engine.config import GenerationConfig, LoraConfig
from engine.config.roles import chosen_dtype
from engine.errors import ModelError
from engine.generation.backend import blocks_dataset
from engine.generation.cache import ResponseCache, model_fingerprint
from engine.generation.vllm_replicas import ReplicaClient, ReplicaPool
from engine.generation.weight_reload import same_architecture
from engine.records import GENERATION_INPUT

# Engine settings that change what a replica answers, beyond each row's own sampling.
ANSWER_SETTINGS = ("dtype", "max_model_len")


# what a setting's key-neutral value is where its default changed since keys were made
# (dtype was bfloat16 before `auto`): answers of that value keep their old keys. A context
# length of 2048 (the default before `auto`) answers every prompt it takes as `auto` does
# (a prompt too long for it fails, and a failed row is never cached), so both key alike.
KEYED_AS_DEFAULT = {"dtype": "bfloat16", "max_model_len": 2048}


def engine_settings(cfg: GenerationConfig) -> str:
    """The answer-changing engine settings that differ from their defaults, for the cache
    key's model id ("" at the defaults: keys made before they were covered stay valid).
    dtype counts as the engine runs it (`auto` resolved for this machine)."""
    fields = type(cfg).model_fields
    value = lambda name: chosen_dtype(cfg.dtype, cfg.use_gpu) if name == "dtype" \
        else getattr(cfg, name)  # noqa: E731
    changed = [f"{name}={value(name)}" for name in ANSWER_SETTINGS
               if value(name) not in (fields[name].default, KEYED_AS_DEFAULT.get(name))]
    return "".join(f"|{c}" for c in changed)


class ReplicaBackend:
    caches = True
    columns = tuple(GENERATION_INPUT)

    def __init__(self, cfg: GenerationConfig, seed: int, log=print,
                 lora: LoraConfig | None = None):
        """`lora`: the engines also serve LoRA adapters of this shape (a LoRA student's own
        engines, or the teacher's when they serve the student too)."""
        self.cfg, self.seed, self.log, self.lora = cfg, seed, log, lora
        self.name = f"{cfg.replicas} vLLM replica(s)"
        self._pools: dict[str, ReplicaPool] = {}  # model -> its running replicas
        self._users: dict[str, int] = {}  # model -> calls using its pool now
        self._starting: dict[str, threading.Lock] = {}  # model -> held while its pool starts
        self._lock = threading.Lock()  # guards these dicts, never held while waiting
        self._waiting = 0  # pools starting now (each may wait for the cluster to have room)
        self._latest: str | None = None

    @property
    def pool(self) -> ReplicaPool | None:
        """The replica pool of the model started last, if it is still running."""
        return self._pools.get(self._latest) if self._latest else None

    def model_id(self, model: str) -> str:
        # a checkpoint re-written in place is a new model; an engine that computes otherwise
        # (another dtype, a shorter context) gives other answers; an adapter answers as
        # itself over its base
        base, adapter = serving(model)
        ids = [model_fingerprint(base)] + ([model_fingerprint(adapter)] if adapter else [])
        return "+".join(ids) + engine_settings(self.cfg)

    def _engine_model(self, model: str) -> str:
        """The model whose pool answers `model`: itself, or an adapter's base."""
        base, adapter = serving(model)
        if adapter and self.lora is None:
            raise ModelError(f"{model!r} is a LoRA adapter, and these engines were not "
                             f"started to serve adapters (set student.lora)")
        return base

    def warm_up(self, model: str) -> None:
        """Start the vLLM replicas for `model` now (a no-op for a warm pool); the next call
        for it uses them. Raises ModelError if they cannot start."""
        model = self._engine_model(model)
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
                    pool = ReplicaPool(model, self.cfg, self.seed, log=self.log,
                                       lora=self.lora)
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

    @contextmanager
    def holding(self, model: str):
        """Keep `model`'s pool, once a call starts it, until the block ends (one stage's
        several calls share one engine start). After the last holder it is shut down,
        unless keep_warm. A warm pool is shut down too when another model's pool is starting
        meanwhile: that start may be waiting for the room this pool holds (tasks side by
        side, each with its own student)."""
        model = self._engine_model(model)
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

    def shutdown(self) -> None:
        """Stop every pool (the job's end)."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown()

    def batches(self, requests: pa.Table, model: str, group: str,
                cache: ResponseCache | None):
        """Yield GENERATED batches from `model`'s running pool as they finish."""
        import ray

        cfg, (base, adapter) = self.cfg, serving(model)
        pool = self._pools[base]
        ds, size = blocks_dataset(requests, cfg.replicas, cfg.batch_size)
        # Two clients per replica: the next block is already in each engine's running
        # batch when one ends (engine/generation/continuous_batch.py).
        ds = ds.map_batches(
            ReplicaClient, batch_size=size, batch_format="pyarrow", num_cpus=0,
            fn_constructor_kwargs={"router": pool.router, "model": base, "adapter": adapter,
                                   "cache_dir": str(cache.root) if cache else None,
                                   "group": group, "stall_timeout_s": cfg.stall_timeout_s,
                                   "placement_timeout_s": cfg.placement_timeout_s,
                                   "max_stalls": cfg.max_stalls},
            compute=ray.data.ActorPoolStrategy(size=2 * cfg.replicas))
        yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")
