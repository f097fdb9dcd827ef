"""What answers a pipeline's requests: one small interface, and the one place a config picks.

`GenerationPipeline` (pipeline.py) keeps what every backend shares: the response cache, one
generation of a request that concurrent calls both ask for, passes started again after the
cluster broke one, progress and the summary. A backend only answers rows and owns whatever
must run to answer them (engines, client actors):

    ReplicaBackend  (replica_backend.py)  warm vLLM replica pools: a causal student, a teacher
    ApiBackend      (openai_api.py)       an OpenAI-compatible API: a teacher with `teacher.api`
    EncoderBackend  (encoder.py)          a classifier actor pool: `student.kind:
                                          sequence_classification`

A new backend is its module (a class with the members below), a branch in `build_backend` and
its config section.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Iterator, Protocol

import pyarrow as pa

from engine.config import GenerationConfig, LoraConfig, StudentConfig, TeacherConfig

if TYPE_CHECKING:
    from engine.generation.cache import ResponseCache
    from engine.generation.openai_api import Secret
    from engine.generation.pipeline import GenerationPipeline


class GenerationBackend(Protocol):
    name: str  # who answered, for the stage's summary line ("the encoder student (2 actor(s))")
    caches: bool  # its answers go to the response cache (False: cheaper to answer again)
    columns: tuple[str, ...]  # the request columns it reads

    def model_id(self, model: str) -> str:
        """`model`'s identity in cache keys: whatever changes its answers (a folder's files,
        an API's address), so an existing cache stays valid and never serves another model."""

    def holding(self, model: str) -> AbstractContextManager:
        """Keep what serves `model`, once started, until the block ends (one stage's calls
        share it); counts the callers using `model` now."""

    def warm_up(self, model: str) -> None:
        """Start what serves `model` now (a no-op where nothing starts or it runs already).
        Raises ModelError if it cannot start: no use retrying."""

    def batches(self, requests: pa.Table, model: str, group: str,
                cache: ResponseCache | None) -> Iterator[pa.Table]:
        """One pass over `requests` (GENERATION_INPUT, `columns` and CACHE_KEY): yield
        GENERATED batches as they finish, any order. Workers store answers in `cache` as they
        arrive. `group`: the rows' owner, whose turns a shared engine takes."""

    def shutdown(self) -> None:
        """Stop everything it started (the job's end)."""


def build_backend(cfg: GenerationConfig, seed: int, api_key: Secret | None = None,
                  log=print, lora: LoraConfig | None = None) -> GenerationBackend:
    """The backend a role's config section asks for. Modules load here, on demand: none
    imports Ray, vLLM or torch at the top, but each brings its own dependencies. `lora`: vLLM
    engines that also serve adapters of this shape (default: the student's own `lora`)."""
    if isinstance(cfg, StudentConfig) and cfg.kind == "sequence_classification":
        from engine.generation.encoder import EncoderBackend

        return EncoderBackend(cfg, log=log)
    if isinstance(cfg, TeacherConfig) and cfg.api is not None:
        from engine.generation.openai_api import ApiBackend

        return ApiBackend(cfg, api_key, log=log)
    from engine.generation.replica_backend import ReplicaBackend

    if lora is None and isinstance(cfg, StudentConfig):
        lora = cfg.lora
    return ReplicaBackend(cfg, seed, log=log, lora=lora)


def build_generator(cfg: GenerationConfig, seed: int, cache: ResponseCache | None = None,
                    api_key: Secret | None = None, log=print) -> GenerationPipeline:
    """The TextGenerator for one role (engine/backends/__init__.py): the pipeline over the
    backend its config section names."""
    from engine.generation.pipeline import GenerationPipeline

    return GenerationPipeline(build_backend(cfg, seed, api_key, log), seed, cache, log=log)


def teacher_serves_student(student: StudentConfig, teacher: TeacherConfig, student_model: str,
                           teacher_model: str) -> bool:
    """Whether the teacher's engines serve the student's adapters too: a LoRA student over
    the teacher's own model (the same folder), the teacher on vLLM (not an API), and the
    engine settings that change answers (dtype, max_model_len) the same for both. Then the
    student starts no engine of its own: one engine start and one copy of the weights (and
    on CPU, its reserved memory) fewer for the whole job, and a round's predict stage runs on
    engines already warm from the teacher's last call. The student's other vLLM settings
    (replicas, max_num_seqs, resources) do not apply then: the teacher's do."""
    from engine.generation.replica_backend import ANSWER_SETTINGS

    return (student.lora is not None and student.kind == "causal_lm"
            and teacher.api is None and student_model == teacher_model
            and all(getattr(student, s) == getattr(teacher, s) for s in ANSWER_SETTINGS))


def build_generators(student: StudentConfig, teacher: TeacherConfig, student_model: str,
                     teacher_model: str, seed: int, cache: ResponseCache | None = None,
                     api_key: Secret | None = None,
                     log=print) -> tuple[GenerationPipeline, GenerationPipeline]:
    """(the student's generator, the teacher's): each over its own backend, or both over the
    teacher's engines where they serve the student's adapters (teacher_serves_student)."""
    from engine.generation.pipeline import GenerationPipeline

    if not teacher_serves_student(student, teacher, student_model, teacher_model):
        return (build_generator(student, seed, cache, log=log),
                build_generator(teacher, seed, cache, api_key, log))
    shared = build_backend(teacher, seed, api_key, log, lora=student.lora)
    log("[replicas] the student's LoRA adapters are served by the teacher's engines (the "
        "same base model): the student starts no engine of its own")
    return (GenerationPipeline(shared, seed, cache, log=log),
            GenerationPipeline(shared, seed, cache, log=log))


def engine_data_context() -> None:
    """Ray Data settings for the engine's generation stages (set before a Dataset is made;
    it keeps the context it was made under)."""
    import ray

    context = ray.data.DataContext.get_current()
    # Per-batch progress bars cost driver CPU and flood non-TTY job logs; each stage logs
    # its own summary instead.
    context.enable_progress_bars = False
    # Ray Data fails a Dataset none of whose operators moved for 30 minutes. A stage whose
    # batches queue behind other units' on a shared replica (three seeds' augments on one
    # teacher engine: the first batch took 30 minutes on a 2-core CPU) is waiting, not
    # stuck; a replica that makes no progress while it has work is found by the engine's own
    # check (`stall_timeout_s`), which replaces it and keeps every answer.
    context.execution_no_progress_timeout_s = -1


def blocks_dataset(requests: pa.Table, workers: int, batch_size: int):
    """(a Ray Dataset over `requests` in blocks, rows per block). Blocks are cut here (a Ray
    Data repartition would add a shuffle stage), at most one batch each and at least one per
    worker, so none sits idle on a small request set."""
    import ray

    size = max(1, min(batch_size, math.ceil(requests.num_rows / workers)))
    blocks = [requests.slice(i, size) for i in range(0, requests.num_rows, size)]
    engine_data_context()
    # from_blocks, not from_arrow: from_arrow reads each block's metadata in a remote task
    # of 1 CPU, which waits forever on a cluster whose CPUs the replicas and trainings
    # hold (seen after a lost node); from_blocks reads it here
    return ray.data.from_blocks(blocks), size
