"""The Ray actor that owns a job's rounds, wired to the real backends.

It is a separate module so `engine.driver` stays importable and testable without Ray.
"""

from __future__ import annotations

import ray

from engine.backends.deepspeed_trainer import RayDeepSpeedTrainer
from engine.backends.vllm_generator import RayVLLMGenerator, sampling_params
from engine.config import RunConfig
from engine.driver import RoundLoop
from engine.tasks import build_task


def _log(message: str) -> None:
    print(message, flush=True)


@ray.remote(num_cpus=0)  # it only orchestrates; workers and engines hold the CPUs
class DriverActor:
    def __init__(self, cfg: RunConfig, student_model: str, teacher_model: str, splits: dict):
        self.splits = splits
        self.loop = RoundLoop(
            cfg,
            tasks=[build_task(t, cfg.seed) for t in cfg.tasks],
            student_model=student_model,
            teacher_model=teacher_model,
            student_gen=RayVLLMGenerator(cfg.student, cfg.seed, log=_log),
            teacher_gen=RayVLLMGenerator(cfg.teacher, cfg.seed, log=_log),
            trainer=RayDeepSpeedTrainer(cfg.train, cfg.seed, log=_log),
            sampling=sampling_params(cfg.teacher),
            log=_log,
        )

    def run(self):
        """A generator: the caller receives each round's metrics as soon as it is done."""
        yield from self.loop.run(self.splits)
