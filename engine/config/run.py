"""The whole job's config (RunConfig) and its train, ray and tracking sections."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, model_validator

from engine.config.base import Strict
from engine.config.roles import LORA_LR, StudentConfig, TeacherConfig, chosen_dtype
from engine.config.strategy import (ERROR_SHAPING, SWITCHES, CompareConfig, StopConfig,
                                    StrategyConfig)
from engine.config.tasks import TaskConfig


class TrainConfig(Strict):
    """Student fine-tuning: Ray Train TorchTrainer + DeepSpeed, from the base model each round."""

    num_workers: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        "auto", description="Ray Train workers (data parallel, batch_size split over them); "
                            "auto: 1 on CPU (one process using the node's cores "
                            "trained a 22M encoder 2x and a 135M student 1.25x as fast as two "
                            "that all-reduce each step, in less memory: BENCHMARKS.md), 2 on "
                            "GPU (1 for an odd batch_size)")
    use_gpu: bool = Field(False, description="one GPU per worker")
    cpus_per_worker: float = Field(1.0, gt=0, description="Ray CPUs reserved per train worker")
    memory_per_worker: float | None = Field(
        None, ge=0, description="GiB of Ray memory reserved per train worker, so trainings side "
                                "by side wait for room instead of running the node out of "
                                "memory; null: on CPU, estimated from the student's parameters "
                                "(16 bytes each, plus 1.2 GiB), none on GPU; 0: none")
    zero_stage: Literal[0, 1, 2, 3, "auto"] = Field(
        "auto", description="DeepSpeed ZeRO stage; auto: 2 for GPU training on several workers "
                            "(it shards the optimizer state over them), else 0 (on CPU, ZeRO-2's "
                            "partitioning cost 34 s a round and saved nothing a small student "
                            "needs: BENCHMARKS.md)")
    epochs: float = Field(2, gt=0, description="passes over the round's training set")
    batch_size: int = Field(8, ge=1, description="rows per step over all workers, each taking "
                                                 "batch_size / num_workers of them (so the "
                                                 "workers change the speed, not the arithmetic); "
                                                 "an optimizer step is grad_accum steps")
    grad_accum: int = Field(1, ge=1, description="steps accumulated per optimizer step")
    lr: float = Field(5e-5, gt=0, description="peak learning rate")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps warming up the LR")
    schedule: Literal["linear", "cosine"] = Field(
        "linear", description="after the warm-up, the LR decays in a straight line (to the "
                              "warm-up's first rate; a run too short to warm up keeps lr), or "
                              "along a cosine to 0 (the LLM2LLM reference code's)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_seq_len: int = Field(384, ge=16, description="tokens per training row (longer are cut)")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="training precision")
    log_every: int = Field(5, ge=1, description="optimizer steps between loss log lines")
    checkpoint_every: Literal["auto", "epoch", "never"] | Annotated[int, Field(ge=1)] = Field(
        "auto", description="checkpoints inside a round, so an interrupted job resumes "
                            "training where it stopped: epoch, N optimizer steps, or never "
                            "(an interrupted round's training starts over; finished stages "
                            "are kept either way); auto: epoch on GPU, never on CPU (a 135M "
                            "student's checkpoint took 57 s here, about a CPU round's epoch)")
    select_epoch: Literal["last", "validation"] = Field(
        "last", description="the weights a round keeps: the last epoch's, or (validation) the "
                            "epoch's that scored best on the task's validation rows, scored "
                            "after every epoch (accuracy for an encoder student, target-token "
                            "loss for a causal one; never test rows), for every strategy alike; "
                            "needs validation rows (tasks.<i>.n_validation) and zero_stage < 3")
    patience: Annotated[int, Field(ge=1)] | None = Field(
        None, description="with select_epoch: validation, stop a round's training once this "
                          "many epochs in a row scored no better than the best so far (the "
                          "best epoch's weights are kept as ever); none: train every epoch. "
                          "Saves the epochs after a small student has learnt its rows (on "
                          "SST-2 the best epoch was the 2nd to 12th of 20), at the risk of "
                          "missing a later, better one")
    max_failures: int = Field(
        3, ge=-1, description="worker failures Ray Train recovers from within one run, "
                              "restarting from the last checkpoint; -1: no limit")
    placement_timeout_s: float = Field(
        600, gt=0, description="when a node with train workers is lost, Ray Train restarts "
                               "them from the last checkpoint on the nodes left; if those "
                               "have no room for all of them within this many seconds (an "
                               "autoscaler may add a node), the stage stops naming what the "
                               "cluster lacks (checkpoints are kept: a re-run resumes)")


    _chosen: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _choose_for_the_machine(self) -> "TrainConfig":
        """`auto` settings take the value for the kind of training (GPU or CPU); the run record
        keeps the value, and `chosen` says which were chosen, for the job to print."""
        chosen = {}
        if self.num_workers == "auto":
            # on GPU two, unless the batch does not split in two
            self.num_workers = chosen["num_workers"] = \
                2 if self.use_gpu and self.batch_size % 2 == 0 else 1
        if self.batch_size % self.num_workers:
            raise ValueError(f"train.batch_size {self.batch_size} does not split evenly over "
                             f"{self.num_workers} workers: set train.batch_size to a multiple of "
                             f"train.num_workers")
        if self.zero_stage == "auto":
            self.zero_stage = chosen["zero_stage"] = 2 if self.use_gpu and self.num_workers > 1 \
                else 0
        if self.select_epoch == "validation" and self.zero_stage == 3:
            raise ValueError("train.select_epoch: validation keeps a copy of the best epoch's "
                             "weights, which ZeRO-3 shards over the workers: set "
                             "train.zero_stage to 2 or lower, or train.select_epoch: last")
        if self.patience is not None and self.select_epoch != "validation":
            raise ValueError(f"train.patience {self.patience} stops training when the "
                             "validation score stops improving, and train.select_epoch is "
                             f"{self.select_epoch!r}: set train.select_epoch: validation, or "
                             "leave train.patience unset")
        if self.checkpoint_every == "auto":
            self.checkpoint_every = chosen["checkpoint_every"] = "epoch" if self.use_gpu \
                else "never"
        self._chosen = chosen
        return self

    @property
    def worker_batch(self) -> int:
        """Rows per step on each worker."""
        return self.batch_size // self.num_workers

    @property
    def chosen(self) -> dict:
        """The settings given as `auto`, with what was chosen for them."""
        return self._chosen


class RayConfig(Strict):
    address: str | None = Field(
        None, description="null: the cluster of a `ray job submit` job, else a fresh local "
                          "instance; `auto` joins a running one")
    num_cpus: int | None = Field(
        None, description="logical CPUs of a local instance (null: max(8, cores))")
    check_fit: bool = Field(
        True, description="refuse a job whose train workers or replicas cannot fit the "
                          "cluster's nodes before any work; turn off on an autoscaling "
                          "cluster that adds nodes on demand")


class TrackingConfig(Strict):
    """Experiment tracking (engine/tracking.py): one MLflow run per unit, with the resolved
    config as params, every round's metrics and the run's report."""

    backend: Literal["none", "mlflow"] = Field(
        "none", description="`mlflow` logs the run to MLflow; `none` (default) tracks nothing "
                            "beyond the run_dir")
    uri: str | None = Field(
        None, description="MLflow tracking URI: a server (http://host:5000) or a database "
                          "(sqlite:///path.db); null: sqlite <run_dir>/mlflow.db, artifacts in "
                          "<run_dir>/mlflow-artifacts (a local run_dir only)")
    experiment: str | None = Field(
        None, description="MLflow experiment name (made if missing); null: the run_dir's "
                          "folder name")

    def resolved_uri(self, run_dir: str) -> str:
        return self.uri or f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"

    def artifact_location(self, run_dir: str) -> str | None:
        """Where a new experiment keeps artifacts: a server decides its own; with a database
        store, <run_dir>/mlflow-artifacts (MLflow would use ./mlruns of whatever folder the
        job happened to run from)."""
        if self.uri and self.uri.startswith(("http://", "https://")):
            return None
        return (Path(run_dir).resolve() / "mlflow-artifacts").as_uri()

    def experiment_name(self, run_dir: str) -> str:
        return self.experiment or Path(run_dir.rstrip("/")).name or "llm2llm"


def import_plugins(modules: list[str]) -> list[str]:
    """Import the config's `plugins` (strategies of your own register on import); returns a
    problem per module that does not import."""
    import importlib

    problems = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any failure is the user's module's, named
            problems.append(f"plugins: cannot import {name!r} ({type(exc).__name__}: {exc}); "
                            f"give a module path importable here and on every node "
                            f"(installed, on PYTHONPATH, or in `ray job submit --working-dir`)")
    return problems


class RunConfig(Strict):
    plugins: list[str] = Field(
        [], description="Python modules imported before the rest of the config is read: "
                        "strategies of your own, outside engine/strategies/ (a Strategy "
                        "subclass with @register, docs/strategies.md). They must import on "
                        "every node: installed, on PYTHONPATH, or in the job's working dir")
    run_dir: str = Field("runs/demo", description="where artifacts go: a path or a pyarrow "
                                                  "filesystem URI")
    rounds: int = Field(2, ge=1, description="rounds of train, predict, mine, augment")
    seed: int = Field(0, description="seed for data splits, training and engines")
    tasks: list[TaskConfig] = Field(min_length=1, description="the job's tasks")
    student: StudentConfig = Field(StudentConfig(), description="the student model and its "
                                   "prediction settings")
    teacher: TeacherConfig = Field(TeacherConfig(), description="the teacher: vLLM or an API")
    train: TrainConfig = Field(TrainConfig(), description="student fine-tuning")
    ray: RayConfig = Field(RayConfig(), description="where Ray runs")
    strategy: StrategyConfig = Field(default_factory=StrategyConfig,
                                     description="the job's strategy")
    stop: StopConfig = Field(StopConfig(), description="stopping rules and teacher budget of "
                                                       "every unit (a task may set its own)")
    compare: CompareConfig | None = Field(
        None, description="run several strategies and training seeds side by side")
    tracking: TrackingConfig = Field(TrackingConfig(), description="experiment tracking "
                                                                   "(MLflow), off by default")
    parallel: int | None = Field(
        None, ge=1, description="how many tasks advance at once, each through its own stages "
                                "(in a compare, each task and training seed); they share the "
                                "teacher's engines and wait for the cluster's resources. "
                                "null: all at once; 1: one after another, round by round")

    @model_validator(mode="before")
    @classmethod
    def _import_plugins(cls, data):
        """Before the strategy names are checked: a plugin registers its own."""
        if isinstance(data, dict) and isinstance(data.get("plugins"), list):
            problems = import_plugins([str(m) for m in data["plugins"]])
            if problems:
                raise ValueError("; ".join(problems))
        return data

    @model_validator(mode="after")
    def _replicas_follow_training_onto_gpus(self) -> "RunConfig":
        for role in (self.student, self.teacher):
            if role.use_gpu is None:
                role.use_gpu = self.train.use_gpu
            if role.dtype == "auto":  # for the machine the job starts on (the run record
                role.dtype = chosen_dtype("auto", role.use_gpu)  # keeps it for a resume)
                role._dtype_chosen = True
        return self

    @model_validator(mode="after")
    def _lora_learning_rate(self) -> "RunConfig":
        if self.student.lora is not None and "lr" not in self.train.model_fields_set:
            self.train.lr = LORA_LR
        return self

    @model_validator(mode="after")
    def _cost_needs_prices(self) -> "RunConfig":
        rules = [self.stop, *(t.stop for t in self.tasks if t.stop)]
        if self.teacher.prices is None and any(r.max_cost_usd is not None for r in rules):
            raise ValueError("stop.max_cost_usd needs teacher.prices (prompt_per_million, "
                             "completion_per_million) to count the cost")
        return self

    @model_validator(mode="after")
    def _remote_run_dir_needs_a_tracking_uri(self) -> "RunConfig":
        if self.tracking.backend == "mlflow" and self.tracking.uri is None and \
                "://" in self.run_dir:
            raise ValueError("tracking.uri: a run_dir on remote storage has no local MLflow "
                             "store beside it; give tracking.uri (e.g. http://host:5000)")
        return self

    @model_validator(mode="after")
    def _no_epoch_chosen_on_rows_trained_on(self) -> "RunConfig":
        entries = self.compare.strategies if self.compare else []
        if self.train.select_epoch == "validation" and (
                self.strategy.train_on_validation or any(
                    "+with_validation" in e for e in entries) or any(
                    t.strategy and t.strategy.train_on_validation for t in self.tasks)):
            raise ValueError("seed_only+with_validation trains on the validation rows that "
                             "train.select_epoch: validation would choose its epoch on; set "
                             "train.select_epoch: last for this compare, or leave the switch "
                             "out")
        return self

    @model_validator(mode="after")
    def _error_shaping_on_an_aimed_strategy(self) -> "RunConfig":
        """keep_label_mix and stratify_errors shape which errors a round asks about; a strategy
        that draws its own targets (random, mixed, zerogen) would ignore them. In a compare the
        strategy section is every unit's shared settings, so there they are for the aimed
        units and the others leave them be (as `compare` refuses random+label_mix itself)."""
        if self.compare:
            return self
        from engine.strategies import strategy_class

        for where, s in [("strategy", self.strategy),
                         *((f"tasks.{t.name}.strategy", t.strategy)
                           for t in self.tasks if t.strategy)]:
            shaping = [f for switch in ERROR_SHAPING for f in SWITCHES[switch] if getattr(s, f)]
            if shaping and not strategy_class(s.name).targets_errors:
                raise ValueError(
                    f"{where}: {' and '.join(shaping)} "
                    f"{'shape' if len(shaping) > 1 else 'shapes'} which errors a round asks "
                    f"about; {s.name} draws its targets otherwise, so it would change "
                    f"nothing. Leave {' and '.join(shaping)} out, or use a strategy that "
                    f"aims at errors (llm2llm, s3)")
        return self

    @model_validator(mode="after")
    def _unique_task_names(self) -> "RunConfig":
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique, repeated: {dupes}")
        return self
