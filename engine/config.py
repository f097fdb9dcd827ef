"""One typed config tree, loaded from YAML with `a.b=c` overrides.

Every problem is collected and reported at once, each with its dotted path, before Ray starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.errors import ConfigError

DEFAULT_MODEL = "smollm2-135m-instruct"


class Strict(BaseModel):
    # An unknown key is a typo until proven otherwise: refuse it.
    model_config = ConfigDict(extra="forbid")


class DataConfig(Strict):
    """Where a task's rows come from: a local .jsonl/.parquet file, or `hub:<name>[:<subset>]`."""

    train: str | None = None
    test: str | None = None


class TaskConfig(Strict):
    """A task: a built-in name (gsm8k, trec, sst2, arithmetic) or a custom definition.

    Fields left unset take the built-in preset's values (engine/tasks/presets.py).
    """

    name: str
    type: Literal["math", "classification", "arithmetic"] | None = None
    data: DataConfig = DataConfig()
    fields: dict[str, str] = {}  # role (question/answer or text/label) -> source column
    labels: list[str] = []  # classification: the label names the student must answer with
    label_names: dict[str, str] = {}  # raw label value in the data -> label name
    description: str | None = None  # one line on what the task is, shown to student and teacher
    prompts: str | None = None  # prompt template file; default prompts/llm2llm/<type>.yaml
    n_seed: int | None = Field(None, ge=1)  # seed rows taken from train (after shuffling)
    seed_fraction: float | None = Field(None, gt=0, le=1)  # or a fraction of train
    n_test: int | None = Field(100, ge=1)  # test rows evaluated each round (None: all)


class Prices(Strict):
    """US dollars per million tokens, for the cost column of the round table."""

    prompt_per_million: float = Field(ge=0)
    completion_per_million: float = Field(ge=0)


class GenerationConfig(Strict):
    """vLLM engine and sampling settings for one role (student prediction or teacher)."""

    model: str = DEFAULT_MODEL
    replicas: int = Field(1, ge=1)
    tensor_parallel_size: int = Field(1, ge=1)
    batch_size: int = Field(64, ge=1)  # rows per Ray Data batch sent to a replica
    max_num_seqs: int = Field(64, ge=1)
    max_model_len: int = Field(2048, ge=128)
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    dtype: str = "bfloat16"
    # On CPU this is a fraction of one NUMA node's memory reserved for the KV cache.
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    enforce_eager: bool = True  # compile warm-up costs minutes on small CPU machines
    cpus_per_replica: float = Field(1.0, gt=0)
    # A replica whose process dies is restarted and its batch re-run, up to this many times
    # per replica; after that the stage fails (rows already generated stay in the cache).
    max_replica_restarts: int = Field(3, ge=0)
    # Keep the engines running between stages and rounds (they hold their GPUs/memory while
    # the student trains). Pays off for the teacher, whose model never changes.
    keep_warm: bool = False
    ignore_eos: bool = False  # always write max_tokens tokens (benchmarks: fixed output length)
    prices: Prices | None = None


class ApiConfig(Strict):
    """A teacher behind an OpenAI-compatible chat completions API."""

    base_url: str  # e.g. https://api.openai.com/v1 (the /chat/completions path is appended)
    # The *name* of the environment variable holding the key; the key itself never goes in a
    # config or the run directory. None: send no key (a local server).
    api_key_env: str | None = "OPENAI_API_KEY"
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)  # prompt + completion tokens
    concurrency: int = Field(8, ge=1)  # requests in flight at once
    timeout_s: float = Field(60, gt=0)  # per request attempt
    max_retries: int = Field(6, ge=0)  # on 429, 5xx, time-outs, connection errors, bad bodies
    backoff_s: float = Field(1.0, ge=0)  # first retry waits about this long, then doubles
    backoff_max_s: float = Field(60, ge=0)
    extra_body: dict[str, Any] = {}  # provider-specific request fields, e.g. {"seed": 0}

    @model_validator(mode="after")
    def _http_url(self) -> "ApiConfig":
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https:// (got {self.base_url!r})")
        return self


class TeacherConfig(GenerationConfig):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)
    n_per_error: int = Field(2, ge=1)  # new examples asked for each wrong seed row
    # Constrain the teacher's output to the task's block format with vLLM structured outputs
    # (a regex per request). For weak teachers that drift off format; off by default.
    constrain_format: bool = False
    keep_warm: bool = True  # the teacher model is the same every round
    # Set to use an OpenAI-compatible API instead of vLLM replicas; `model` is then the API's
    # model name and the vLLM settings above do not apply.
    api: ApiConfig | None = None

    @model_validator(mode="after")
    def _api_cannot_constrain(self) -> "TeacherConfig":
        if self.api is not None and self.constrain_format:
            raise ValueError("constrain_format needs a vLLM teacher (vLLM enforces the regex "
                             "while decoding); remove teacher.api or set constrain_format: false")
        return self


class TrainConfig(Strict):
    """Student fine-tuning: Ray Train TorchTrainer + DeepSpeed, from the base model each round."""

    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    zero_stage: Literal[0, 1, 2, 3] = 2
    epochs: float = Field(2, gt=0)
    batch_size: int = Field(4, ge=1)  # per worker
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(5e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_seq_len: int = Field(384, ge=16)
    precision: Literal["fp32", "bf16"] = "fp32"
    log_every: int = Field(5, ge=1)
    # Checkpoints inside a round, so an interrupted job resumes training where it stopped:
    # "epoch" (at the end of each epoch), N (every N optimizer steps) or "never".
    checkpoint_every: Literal["epoch", "never"] | Annotated[int, Field(ge=1)] = "epoch"
    # Worker failures (a killed process, a lost node) Ray Train recovers from within one run,
    # restarting its workers from the last checkpoint; -1: no limit.
    max_failures: int = Field(3, ge=-1)


class RayConfig(Strict):
    # None: the cluster a `ray job submit` job runs in (RAY_ADDRESS), else a fresh local one.
    address: str | None = None
    num_cpus: int | None = None  # logical CPUs for a local instance (None: max(8, cores))


class RunConfig(Strict):
    run_dir: str = "runs/demo"
    rounds: int = Field(2, ge=1)
    seed: int = 0
    tasks: list[TaskConfig] = Field(min_length=1)
    student: GenerationConfig = GenerationConfig()
    teacher: TeacherConfig = TeacherConfig()
    train: TrainConfig = TrainConfig()
    ray: RayConfig = RayConfig()

    @model_validator(mode="after")
    def _unique_task_names(self) -> "RunConfig":
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique, repeated: {dupes}")
        return self


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=1e-4` -> (["train", "lr"], 1e-4). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {text!r} has an empty key part")
    return key.split("."), yaml.safe_load(raw) if raw != "" else ""


def _apply_override(tree: dict, path: list[str], value: Any) -> None:
    node: Any = tree
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            node = node[int(part)]
            continue
        nxt = path[i + 1]
        node = node.setdefault(part, [] if nxt.isdigit() else {})
    last = path[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _format_error(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "<root>"
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key (check the spelling; see engine/config.py for valid keys)"
    return f"{loc}: {err['msg']} (got {err.get('input')!r})"


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Load YAML, apply overrides, validate. Raises ConfigError listing every problem."""
    problems: list[str] = []
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError([f"config file {str(p)!r} does not exist"])
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError([f"{p}: not valid YAML: {exc}"]) from None
        if not isinstance(tree, dict):
            raise ConfigError([f"{p}: top level must be a mapping, got {type(tree).__name__}"])
    for text in overrides:
        try:
            keys, value = parse_override(text)
            _apply_override(tree, keys, value)
        except (ValueError, IndexError, TypeError, AttributeError) as exc:
            problems.append(f"override {text!r}: {exc}")
    try:
        cfg = RunConfig.model_validate(tree)
    except ValidationError as exc:
        problems.extend(_format_error(e) for e in exc.errors())
        cfg = None
    if problems:
        raise ConfigError(problems)
    return cfg
