"""A CPU train worker's threads: the node's cores shared among the training workers on it.

One training alone should use every core (torch's intra-op threads); several side by side (a
compare's units, several jobs on one node) should split them, since more OpenMP threads than
cores make every thread wait on preempted ones: three 2-thread MiniLM trainings on 2 cores
took 6 to 20x as long as one alone, three 1-thread ones 2.4x. Each worker registers itself in
a folder on its node (a file named by its process id) and, as trainings start and end, sets
its threads to the node's cores divided by the workers registered there.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

SHARE_DIR = Path(tempfile.gettempdir()) / "llm2llm-cpu-training-workers"
RECHECK_S = 2.0  # how often a worker looks at who else trains on its node


def node_cores() -> int:
    """The cores this process may run on (its affinity, e.g. a container's CPU set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class CoreShare:
    """This worker's share of its node's cores, kept current by `threads()`."""

    def __init__(self, directory: Path = SHARE_DIR, cores: int | None = None,
                 pid: int | None = None, clock=time.monotonic):
        self.directory, self.cores = Path(directory), cores or node_cores()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / str(pid or os.getpid())
        self.path.touch()
        self.clock, self.checked_at, self.current = clock, None, None

    def workers(self) -> int:
        """Training workers registered on this node and still running (this one included);
        the files of workers that died without closing are removed."""
        count = 0
        for entry in self.directory.iterdir():
            if not entry.name.isdigit():
                continue
            if entry == self.path or _alive(int(entry.name)):
                count += 1
            else:
                entry.unlink(missing_ok=True)
        return max(1, count)

    def threads(self) -> int:
        """Threads this worker should use now: the cores over the workers, at least 1.
        Looks at the folder at most every RECHECK_S seconds."""
        now = self.clock()
        if self.current is None or now - self.checked_at >= RECHECK_S:
            self.checked_at, self.current = now, max(1, self.cores // self.workers())
        return self.current

    def close(self) -> None:
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "CoreShare":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
