"""Stages of a round, in order, and what each one's output depends on.

Each stage is a module with one entry point over Arrow tables (data: the round's training
set, train.py, predict.py, mine.py, augment.py); a stage that needs a backend (the trainer,
the student, the teacher) takes it as an argument, so every stage runs without Ray in unit
tests. The round loop (engine/driver.py) calls them in order, each through
engine/stage_store.py. What a stage depends on is declared here, once:
rerun planning (engine/rerun.py) and resume compatibility read these declarations, so adding a
setting to a stage's list is all it takes for a change of that setting to redo the stage.
"""

from engine.storage import STAGES  # noqa: F401 - the stage folders, in order

# Dotted config paths (fnmatch patterns; `tasks.*.x` is task x's own setting, which affects
# that task only) and prompt template hashes (`prompts.<task>.student|teacher`) each stage's
# output depends on. A changed path redoes the first stage that lists it and everything after;
# a path no stage lists and that is not OPERATIONAL redoes everything (never too little).
STAGE_INPUTS: dict[str, list[str]] = {
    "data": ["seed", "tasks.*.name", "tasks.*.type", "tasks.*.data.*", "tasks.*.fields.*",
             "tasks.*.labels*", "tasks.*.label_names*", "tasks.*.n_seed",
             "tasks.*.seed_fraction", "tasks.*.n_validation", "strategy.added_share",
             "tasks.*.strategy.added_share"],
    "train": ["train.*", "student.model", "student.kind", "student.lora*", "tasks.*.description",
              "tasks.*.prompts",
              "prompts.*.student", "strategy.from_base", "tasks.*.strategy.from_base",
              "tasks.*.strategy"],
    "predict": ["student.*", "tasks.*.n_test", "tasks.*.n_guard", "tasks.*.student_sampling.*",
                "strategy.mine_from", "tasks.*.strategy.mine_from"],
    "mine": [],
    "augment": ["teacher.*", "tasks.*.teacher_sampling.*", "prompts.*.teacher", "prompts.*.s3",
                "tasks.*.s3_prompts", "strategy.*", "compare.match",
                "tasks.*.strategy.*"],
}

# Settings that change how a run executes but not what it produces: a run may resume with new
# values (a lower request rate after hitting a provider's limits, more replicas, more rounds,
# a larger teacher budget, more strategies or seeds in a compare: each is a unit of its own,
# the others stay valid; train workers split the same batch, so only the rows' draw differs).
# Stages finished under the old values are kept as they are.
OPERATIONAL = ["plugins", "rounds", "parallel", "tracking.*", "stop.*", "tasks.*.stop*", "compare", "compare.strategies*",
               "compare.seeds*", "ray.*", "*.replicas", "*.keep_warm", "*.max_replica_restarts",
               "*.stall_timeout_s", "*.max_stalls", "*.placement_timeout_s",
               "*.cpus_per_replica", "*.use_gpu", "*.resources", "train.cpus_per_worker", "train.num_workers", "*.prices*", "train.log_every", "train.checkpoint_every",
               "train.max_failures", "student.lora.max_loras",
               *(f"teacher.api.{k}" for k in ("requests_per_minute", "tokens_per_minute",
                                               "concurrency", "timeout_s", "max_retries",
                                               "backoff_s", "backoff_max_s"))]
