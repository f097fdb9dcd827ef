"""What a job asks of the cluster, and whether the cluster can give it, checked before any work.

Every stage reserves its resources from the config: a train worker `train.cpus_per_worker`
CPUs (and one GPU with `train.use_gpu`; on CPU the memory it will use) in Ray Train's
placement group, a vLLM replica `cpus_per_replica` CPUs (and `tensor_parallel_size` GPUs with
`use_gpu`) in a one-bundle placement group, so on one node. A stage whose reservation the cluster can never grant would
wait forever; this module finds that at the start and names what is missing.
"""

from __future__ import annotations

from engine.config import GenerationConfig, RunConfig, TrainConfig

# A CPU train worker's memory: fp32 weights, gradients and two Adam moments (16 bytes a
# parameter), plus torch, DeepSpeed and a small batch's activations. Measured: 3.4 GB resident
# per worker for SmolLM2-135M (2.2 GB of it the 16 bytes a parameter).
TRAIN_BYTES_PER_PARAMETER = 16
TRAIN_OVERHEAD_BYTES = 1.2 * 2 ** 30
# A LoRA student's base is frozen: its fp32 weights (4 bytes) and their share of the
# activations' gradients; the adapter's own optimizer state is a few MB.
LORA_BYTES_PER_PARAMETER = 6


def train_bundle(train: TrainConfig, student_parameters: int | None = None,
                 lora: bool = False) -> dict[str, float]:
    """A train worker's reservation. On CPU it includes the memory the worker will use
    (`train.memory_per_worker`, or estimated from the student's parameter count when known):
    three tasks' trainings side by side on a 24 GiB machine ran it out of memory. `lora`: the
    student trains an adapter over its frozen parameters."""
    bundle = {"CPU": train.cpus_per_worker, **({"GPU": 1.0} if train.use_gpu else {})}
    if train.memory_per_worker is not None:
        memory = train.memory_per_worker * 2 ** 30
    elif not train.use_gpu and student_parameters:
        per_parameter = LORA_BYTES_PER_PARAMETER if lora else TRAIN_BYTES_PER_PARAMETER
        memory = per_parameter * student_parameters + TRAIN_OVERHEAD_BYTES
    else:
        memory = 0
    return {**bundle, "memory": float(int(memory))} if memory else bundle


def replica_bundle(role: GenerationConfig, host_memory: float | None = None) -> dict[str, float]:
    """A replica's reservation. On CPU, vLLM takes `gpu_memory_utilization` of the node's
    memory for itself (weights and KV cache) and refuses to start when less is free, so a CPU
    replica reserves that much of Ray's `memory`: engines of tasks side by side then wait for
    each other instead of failing. An encoder student's prediction actors are small and on
    CPU. host_memory: the node's memory in bytes (default: this machine's)."""
    encoder = getattr(role, "kind", "causal_lm") != "causal_lm"
    if role.use_gpu and not encoder:
        gpu = {"GPU": float(role.tensor_parallel_size)}
    elif encoder:
        gpu = {}
    else:
        if host_memory is None:
            import psutil  # with Ray

            host_memory = psutil.virtual_memory().total
        total = host_memory
        gpu = {"memory": float(int(role.gpu_memory_utilization * total))}
    return {"CPU": role.cpus_per_replica, **gpu, **role.resources}


def pack(nodes: list[dict[str, float]], bundles: list[dict[str, float]]) -> bool:
    """Whether every bundle fits on some node at once (first fit, largest bundles first):
    the resources of a node are shared by the bundles placed on it, a bundle never spans
    nodes."""
    free = [dict(n) for n in nodes]
    for bundle in sorted(bundles, key=lambda b: (-b.get("GPU", 0), -b.get("CPU", 0))):
        for node in free:
            if all(node.get(k, 0) + 1e-9 >= v for k, v in bundle.items()):
                for k, v in bundle.items():
                    node[k] -= v
                break
        else:
            return False
    return True


def _describe(bundle: dict[str, float]) -> str:
    return " + ".join(f"{v / 2 ** 30:.1f} GiB memory" if k == "memory" else f"{v:g} {k}"
                      for k, v in bundle.items())


def _largest(nodes: list[dict[str, float]]) -> str:
    best = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
    return (f"{best.get('CPU', 0):g} CPU, {best.get('GPU', 0):g} GPU, "
            f"{best.get('memory', 0) / 2 ** 30:.1f} GiB memory for tasks")


def fit_problems(cfg: RunConfig, nodes: list[dict[str, float]],
                 host_memory: float | None = None,
                 student_parameters: int | None = None,
                 student_on_teacher: bool = False) -> list[str]:
    """What the job needs at once that the cluster's nodes (their total resources) cannot
    hold, each with the settings that would fix it. Empty when it fits.
    `student_on_teacher`: the teacher's engines serve the student's LoRA adapters
    (engine/generation/backend.py: teacher_serves_student), so the student has none."""
    problems = []
    total = {k: sum(n.get(k, 0) for n in nodes) for k in ("CPU", "GPU")}
    cluster = f"the cluster has {total['CPU']:g} CPU and {total['GPU']:g} GPU on " \
              f"{len(nodes)} node(s), the largest {_largest(nodes)}"
    lora = cfg.student.lora is not None
    workers = [train_bundle(cfg.train, student_parameters, lora)] * cfg.train.num_workers
    if not pack(nodes, workers):
        problems.append(f"training needs {cfg.train.num_workers} worker(s) of "
                        f"{_describe(workers[0])} each; {cluster}: lower train.num_workers "
                        f"or train.cpus_per_worker (on CPU: or train.memory_per_worker), or "
                        f"set train.use_gpu as the nodes allow")
    roles = [] if student_on_teacher else [("student", cfg.student)]
    if cfg.teacher.api is None:
        roles.append(("teacher", cfg.teacher))
    for name, role in roles:
        replicas = [replica_bundle(role, host_memory)] * role.replicas
        if not pack(nodes, replicas):
            problems.append(
                f"{name} needs {role.replicas} replica(s) of {_describe(replicas[0])} "
                f"each, every replica on one node; {cluster}: lower {name}.replicas, "
                f"{name}.tensor_parallel_size, {name}.cpus_per_replica or (on CPU) "
                f"{name}.gpu_memory_utilization, or set {name}.use_gpu as the nodes allow")
    if problems:
        return problems
    # A pool kept warm holds its reservation all job: every other stage must fit beside it
    # (training; the other role's replicas).
    pools = {} if student_on_teacher else \
        {"student": [replica_bundle(cfg.student, host_memory)] * cfg.student.replicas}
    if cfg.teacher.api is None:
        pools["teacher"] = [replica_bundle(cfg.teacher, host_memory)] * cfg.teacher.replicas
    warm = [name for name, role in (("teacher", cfg.teacher), ("student", cfg.student))
            if name in pools and role.keep_warm
            and (name == "teacher" or cfg.student.kind == "causal_lm")]  # an encoder: no vLLM
    stages = [("training", workers)] + [(f"the {name}'s replicas", pools[name])
                                        for name in pools if name not in warm]
    held = [b for name in warm for b in pools[name]]
    for what, bundles in stages if warm else []:
        if not pack(nodes, held + bundles):
            names = " and ".join(f"{name}'s replicas" for name in warm)
            fixes = " and ".join(f"{name}.keep_warm: false" for name in warm)
            problems.append(
                f"the {names}, kept warm all job ({', '.join(_describe(pools[n][0]) for n in warm)} "
                f"each), leave no room for {what} ({_describe(bundles[0])} x {len(bundles)}); "
                f"{cluster}: set {fixes} (engines then stop after each stage and start again "
                f"for the next), or lower the replicas (on CPU: or their gpu_memory_utilization)")
    return problems


def no_room(what: str, bundle: dict[str, float], count: int, waited_s: float, fixes: str,
            nodes: list[dict[str, float]] | None = None) -> str:
    """Why a stage stops after a node was lost: the live nodes cannot hold `count` workers of
    `bundle` (`what`) even when empty, and no node came within `waited_s`; what the cluster
    has now, and what to do."""
    nodes = cluster_nodes() if nodes is None else nodes
    total = {k: sum(n.get(k, 0) for n in nodes) for k in ("CPU", "GPU")}
    return (f"{what} ({count} of {_describe(bundle)} each) lost its node, and the "
            f"{len(nodes)} node(s) left cannot hold it ({total['CPU']:g} CPU and "
            f"{total['GPU']:g} GPU in all, the largest node {_largest(nodes)}); no node came "
            f"within {waited_s:.0f}s: add a node, or {fixes}")


def cluster_holds(bundles: list[dict[str, float]]) -> bool:
    """Whether the live nodes, were they empty, could hold `bundles` at once: false after a
    node loss that left too little (room held by other work is not counted as missing)."""
    return pack(cluster_nodes(), bundles)


def cluster_nodes() -> list[dict[str, float]]:
    """The total resources (CPU, GPU, custom labels) of each live node of the connected Ray
    cluster."""
    import ray

    return [{k: float(v) for k, v in n["Resources"].items()}
            for n in ray.nodes() if n.get("Alive")]
