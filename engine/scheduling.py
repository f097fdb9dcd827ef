"""How a job's units advance: in groups that depend on each other, side by side.

A group is a task (in a compare, a task and training seed): its units depend on each other
(round-0 stages are shared, baselines match a budget-setting unit's requests), groups do not.
With `parallel` 1 every round runs group after group; otherwise each group runs in its own
thread at its own pace, and its rounds come back as they finish.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

from engine.stage_store import Aborted
from engine.strategies import Unit

Rounds = Callable[[list[Unit]], Iterator[list[dict]]]  # units -> each round's metrics


def unit_groups(units: list[Unit]) -> list[list[Unit]]:
    """The units of each task and training seed, in run order."""
    groups: dict[tuple[str, int], list[Unit]] = {}
    for unit in units:
        groups.setdefault((unit.task.name, unit.train_seed), []).append(unit)
    return list(groups.values())


def advance(units: list[Unit], rounds: Rounds, parallel: int | None, abort: threading.Event,
            log: Callable[[str], None]) -> Iterator[list[dict]]:
    """Yield each round's metrics of `units`: all units round by round when at most one group
    runs at a time, else each group's rounds as they finish."""
    groups = unit_groups(units)
    width = min(parallel or len(groups), len(groups))
    if width <= 1:
        yield from rounds(units)
    else:
        yield from side_by_side(groups, rounds, width, abort, log)


def side_by_side(groups: list[list[Unit]], rounds: Rounds, width: int,
                 abort: threading.Event, log: Callable[[str], None]) -> Iterator[list[dict]]:
    """Run the groups in threads, at most `width` at once; yield each group's rounds as they
    finish. The stages' own resources (train workers, replicas) wait for the cluster in Ray,
    so on a small cluster the groups interleave rather than overload it. An error that stops
    the job (a full disk) sets `abort`: the other groups stop at their next stage."""
    finished: queue.Queue = queue.Queue()
    slots = threading.Semaphore(width)

    def run(units: list[Unit]) -> None:
        try:
            with slots:
                for metrics in rounds(units):
                    finished.put(("round", metrics))
        except Aborted:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the job's thread
            finished.put(("error", exc))
        finally:
            finished.put(("done", None))

    abort.clear()
    threads = [threading.Thread(target=run, args=(units,), daemon=True,
                                name=f"units-{units[0].key}") for units in groups]
    for thread in threads:
        thread.start()
    running, error = len(threads), None
    try:
        while running:
            kind, value = finished.get()
            if kind == "round":
                yield value
            elif kind == "error" and error is None:
                error = value
                abort.set()
                log("stopping: the other tasks end at their next stage")
            elif kind == "done":
                running -= 1
    finally:
        abort.set()  # also when the caller stops early: no new stage starts
        for thread in threads:
            thread.join()
    if error is not None:
        raise error
