"""A CPU train worker's threads: the node's cores split among the training workers on it."""

import os
import subprocess
import sys

from engine.backends.core_share import RECHECK_S, CoreShare


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_workers_on_a_node_split_its_cores_as_they_come_and_go(tmp_path):
    clock = Clock()
    first = CoreShare(tmp_path, cores=4, pid=os.getpid(), clock=clock)
    assert first.threads() == 4  # alone: every core
    # another live process registers (this test's parent stands in for a second worker)
    second = CoreShare(tmp_path, cores=4, pid=os.getppid(), clock=clock)
    assert second.threads() == 2
    assert first.threads() == 4  # the folder is looked at again only after RECHECK_S
    clock.now += RECHECK_S
    assert first.threads() == 2
    second.close()
    clock.now += RECHECK_S
    assert first.threads() == 4
    with CoreShare(tmp_path, cores=1, pid=os.getppid(), clock=clock) as crowded:
        assert crowded.threads() == 1  # never fewer than one thread
    assert sorted(p.name for p in tmp_path.iterdir()) == [str(os.getpid())]


def test_a_worker_killed_without_closing_stops_counting(tmp_path):
    """A worker that died (kill -9, a lost actor) leaves its file: it no longer takes a share,
    and its file is removed."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    (tmp_path / dead.stdout.strip()).touch()
    share = CoreShare(tmp_path, cores=2, pid=os.getpid(), clock=Clock())
    assert share.threads() == 2
    assert not (tmp_path / dead.stdout.strip()).exists()
    share.close()
