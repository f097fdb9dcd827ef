"""Starting a fresh local Ray instance, the way the engine's own runs and its benchmarks do."""

from __future__ import annotations

import os

# Ray lowers every worker process's priority (nice 15) so that its raylet and GCS stay
# responsive; the vLLM engines and training workers of a run are Ray workers, and the child
# processes they start (vLLM's engine core and model worker) inherit it. On a machine whose
# cores the run fills, Ray's own processes at nice 0 (the driver, raylet, GCS, dashboard
# agent: about 8% of a core here) then preempt the model's threads whenever they wake: the
# teacher generated about 6% slower than at nice 0 (BENCHMARKS.md, generation). A local
# instance runs only this run's work, so its workers keep the driver's priority. The user's
# own setting wins.
LOCAL_RAY_ENV = {"RAY_worker_niceness": "0"}


def init_local(num_cpus: int | None = None, **kwargs) -> None:
    """A fresh local instance (`address="local"`: a bare ray.init() may join a stale
    `ray start` cluster) with LOCAL_RAY_ENV. Logical CPUs default to at least 8, above a
    small machine's cores, so train workers, vLLM replicas and Ray Data's own tasks coexist;
    each process sets its real thread count itself."""
    import ray

    for name, value in LOCAL_RAY_ENV.items():  # the processes Ray starts inherit them
        os.environ.setdefault(name, value)
    ray.init(address="local", num_cpus=num_cpus or max(8, os.cpu_count() or 1), **kwargs)
