"""Ray Train after a lost node: keep waiting for room other work holds, stop when none is left.

Imported only when a training starts (Ray Train's modules take a second and more to load).
It hooks into Ray Train's controller (`ControllerCallback`, a developer API of Ray Train v2,
passed in `RunConfig.callbacks`): no public setting tells "the cluster is busy" from "the
cluster lost the node the run needs".
"""

from __future__ import annotations

import time

from ray.train.v2._internal.execution.callback import ControllerCallback

from engine.errors import PlacementError
from engine.placement import cluster_holds, no_room


class StopWhenNoRoom(ControllerCallback):
    """Ray Train after a lost node: it restarts the worker group from the last checkpoint,
    and while the group finds no room it tries again each minute, forever (an autoscaler may
    add a node). Room other work holds (another task's training) is worth waiting for; but
    once the live nodes could not hold the group even when empty for `timeout_s`, this stops
    the run with a PlacementError (Ray Train calls this hook on every failed try; an error
    raised here fails the run, not retried)."""

    def __init__(self, bundle: dict[str, float], workers: int, timeout_s: float):
        self.bundle, self.workers, self.timeout_s = bundle, workers, timeout_s
        self.since: float | None = None  # when the cluster was first seen too small

    def before_controller_execute_failure_decision(self, failure_decision) -> None:
        if cluster_holds([self.bundle] * self.workers):
            self.since = None
            return
        now = time.monotonic()
        self.since = self.since or now
        if now - self.since >= self.timeout_s:
            raise PlacementError(no_room(
                "training", self.bundle, self.workers, now - self.since,
                "lower train.num_workers or train.cpus_per_worker"))
