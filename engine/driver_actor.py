"""The Ray actor that owns a job's rounds, wired to the real backends.

It is a separate module so `engine.driver` stays importable and testable without Ray.
"""

from __future__ import annotations

import threading
import time

import ray

from engine.backends.deepspeed_trainer import RayDeepSpeedTrainer
from engine.config import RunConfig, import_plugins
from engine.console import QueueLog
from engine.errors import UnitsFailed
from engine.driver import RoundLoop
from engine.generation.backend import build_generators
from engine.generation.cache import ResponseCache
from engine.generation.openai_api import Secret
from engine.storage import HEARTBEAT_EVERY_S, RunStorage
from engine.tasks import build_task


def _print(message: str) -> None:
    print(message, flush=True)


@ray.remote(num_cpus=0)  # it only orchestrates; workers and engines hold the CPUs
class DriverActor:
    def __init__(self, cfg: RunConfig, student_model: str, teacher_model: str, splits: dict,
                 api_key: Secret | None = None, console=None, job_pid: int | None = None):
        """`console`: a ray.util.queue.Queue the job's process shows events from (lines and
        progress, engine/console.py); without one, lines go to this actor's output only.
        `job_pid`: the job's process, named in the heartbeat (a second run on the run_dir is
        refused while it lives)."""
        self.splits, self.job_pid, self.started = splits, job_pid, time.time()
        import_plugins(cfg.plugins)  # this process's registry knows the job's own strategies
        log = QueueLog(console) if console is not None else _print
        # One cache for both roles: keys include the model, so they never collide.
        cache = ResponseCache(RunStorage(cfg.run_dir).cache_dir(), log=log)
        self.student_gen, self.teacher_gen = build_generators(
            cfg.student, cfg.teacher, student_model, teacher_model, cfg.seed, cache, api_key,
            log=log)
        self.loop = RoundLoop(
            cfg,
            tasks=[build_task(t, cfg.seed) for t in cfg.tasks],
            student_model=student_model,
            teacher_model=teacher_model,
            student_gen=self.student_gen,
            teacher_gen=self.teacher_gen,
            trainer=RayDeepSpeedTrainer(cfg.train, log=log, kind=cfg.student.kind,
                                        lora=cfg.student.lora),
            log=log,
        )

    def run(self):
        """A generator: the caller receives each round's metrics as soon as it is done."""
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(stop,), daemon=True)
        beat.start()
        try:
            try:
                yield from self.loop.run(self.splits)
            except UnitsFailed:  # the job ran to its end; some units failed on the way
                self._finish(stop, beat)
                raise
            self._finish(stop, beat)
        finally:
            stop.set()
            self.student_gen.shutdown()
            self.teacher_gen.shutdown()

    def _finish(self, stop: threading.Event, beat: threading.Thread) -> None:
        stop.set()
        beat.join()  # so no late beat overwrites the final one
        self.loop.store.write_heartbeat(finished=True, job_pid=self.job_pid,
                                        started=self.started)

    def _beat(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.loop.store.write_heartbeat(job_pid=self.job_pid, started=self.started)
            stop.wait(HEARTBEAT_EVERY_S)
