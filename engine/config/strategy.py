"""The strategy, compare and stop sections: how rounds choose their teacher requests,
what a compare sweeps, and when a unit stops."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, model_validator

from engine.config.base import Strict


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
                           "a weak student makes mostly on one label (strategies that aim at "
                           "errors: llm2llm, s3; compare switch +label_mix)")
    stratify_errors: bool = Field(
        False, description="classification tasks: a round asks about at most each label's "
                           "share of its targets by the mined rows' label mix, from the "
                           "errors alone (s3 implies it: the paper-consistent form of "
                           "keep_label_mix, which tops up with right rows; strategies that aim "
                           "at errors); compare switch +stratify")
    rationales_per_label: int = Field(
        4, ge=1, description="s3 seed synthesis: rationales the teacher writes per label (what "
                             "makes a text have it), each the theme of some examples; zerogen "
                             "without a labelled seed asks as many times per label")
    budget_scale: float = Field(
        1.0, gt=0, description="in a compare, a unit that matches another's budget (random, "
                               "mixed, zerogen, a switch variant) gets this many times it, "
                               "e.g. `zerogen+scale=3` for the S3 paper's ZeroGen with about "
                               "three times the rows")
    train_on_validation: bool = Field(
        False, description="seed_only: train on the seed plus the task's real validation "
                           "rows, the fair floor for strategies that show those rows to the "
                           "teacher (mine_from: validation); compare switch "
                           "seed_only+with_validation")
    rows_per_error: int | None = Field(
        None, ge=1, description="rows the teacher is asked for per error (per target); null: "
                                "teacher.n_per_error. s3 implies 1, as the paper's Alg. 2 "
                                "writes one example per misclassified row")
    extrapolate: bool = Field(
        True, description="s3: later rounds write new examples like the errors (error "
                          "extrapolation); false: as many rows written as the seed was, new "
                          "rationales and no error shown (the paper's control, 'S3 without "
                          "error extrapolation, same amount of data'; compare switch "
                          "s3+no_extrapolation, best with --match rows)")
    added_share: float | None = Field(
        None, gt=0, lt=1, description="the share of a round's training rows that are added "
                                      "rows (written by the rounds, not the seed), as the "
                                      "S3 paper's Eq. 2 mixes p * P_add + (1 - p) * P(0): "
                                      "added rows repeated, or a random subset of them, to "
                                      "that share. null: every row once (the paper's shares "
                                      "were 0.045 on RTE to 0.29 on IMDb)")
    real_first_text: bool | None = Field(
        None, description="s3 and zerogen on a sentence-pair task (NLI): the teacher writes "
                          "only each pair's second text (the hypothesis) on a real first "
                          "text (the premise), as the S3 paper's NLI synthesis and ZeroGen's: "
                          "a written row's premise drawn from the task's unused train rows, "
                          "an extrapolated row's the error's own; the gates judge only what "
                          "was written. null: both do so on every pair task; false: the "
                          "teacher writes both texts")
    seed_rows_per_request: int = Field(
        2, ge=1, description="s3 seed synthesis (and s3 without extrapolation): rows one "
                             "request asks for at most; a rationale with more rows to write "
                             "is asked again, each ask its own draw. 2: asked for 8 at once, "
                             "the bundled teacher wrote one text over and over (yield 0.58 "
                             "against 0.95 on SST-2, 0.71 against 0.85 on RTE, no more "
                             "completion tokens; BENCHMARKS.md)")
    seed_rows_per_label: int = Field(
        200, ge=1, description="s3 and zerogen without a labelled seed: synthetic seed rows "
                               "asked for per label in round 0 (spread over its rationales, "
                               "seed_rows_per_request at a time). The S3 paper's seeds have "
                               "thousands of rows, so that the student learns the seed "
                               "distribution and its errors are not all one label")

    @model_validator(mode="before")
    @classmethod
    def _known_strategy(cls, data):
        """A registered name; the settings it implies (s3: mine_from validation) unless given."""
        if isinstance(data, dict):
            cls_ = _strategy_class(data.get("name", "llm2llm"))
            data = {**cls_.implied, **data}
            if data.get("train_on_validation") and cls_.uses_teacher:
                raise ValueError(f"train_on_validation (with_validation) is the seed_only "
                                 f"floor's: {cls_.name} mines or shows the validation rows, "
                                 f"and training on them too would hide its errors")
            if data.get("real_first_text") and not cls_.second_text_templates:
                raise ValueError(f"real_first_text is for a strategy that writes pairs "
                                 f"without showing a real one (s3, zerogen), not {cls_.name}")
            if data.get("extrapolate") is False and not cls_.explains:
                raise ValueError(f"extrapolate: false (no_extrapolation) is for a strategy "
                                 f"that writes its seed by explain-then-generate (s3), not "
                                 f"{cls_.name}")
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
            "label_fit": {"label_fit": True}, "no_extrapolation": {"extrapolate": False},
            "with_validation": {"train_on_validation": True},
            "stratify": {"stratify_errors": True}}
ERROR_SHAPING = ("label_mix", "stratify")  # only for strategies whose targets are the errors


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
        option = strategy.options.get(key) or (
            "budget_scale" if key == "scale" and strategy.uses_teacher else None)
        if value and option:
            try:
                fields[option] = float(value)
            except ValueError:
                raise ValueError(f"{spec!r}: {key} takes a number, e.g. "
                                 f"{name}+{key}=0.25") from None
        elif switch in ERROR_SHAPING and not strategy.targets_errors:
            raise ValueError(f"{spec!r}: {switch} shapes which errors a strategy asks about; "
                             f"{name} draws its targets otherwise, so it would change nothing. "
                             f"Put it on an aimed strategy (llm2llm+{switch}, s3+{switch})")
        elif switch in SWITCHES and (strategy.takes_switches
                                     or switch in strategy.own_switches):
            fields.update(SWITCHES[switch])
        else:
            raise ValueError(f"{spec!r}: {switch!r} is not a switch of {name}; "
                             f"{switch_help(name)}")
    return fields


def switch_help(name: str | None = None) -> str:
    """The switches a compare entry may carry, for errors and `compare --help`."""
    from engine.strategies import REGISTRY

    if name is not None and not _strategy_class(name).takes_switches:
        own = _strategy_class(name).own_switches
        return f"{name} takes " + (", ".join(own) + " only" if own else "none")
    options = [f"{key}=X ({strategy})" for strategy, cls in REGISTRY.items()
               for key in cls.options if name in (None, strategy)]
    return "switches: " + ", ".join([*SWITCHES, "scale=X (a matched budget times X)", *options])


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
    match: Literal["targets", "requests", "rows"] = Field(
        "targets", description="what the baselines and switch variants match of plain "
                               "llm2llm's (else s3's) round, same task and seed: the rows it "
                               "asked about (targets; top-up asks and yield then differ), the "
                               "teacher requests it sent (top-ups included), or the rows it "
                               "accepted; `+scale=X` multiplies it")

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
        None, ge=1, description="stop when accuracy on the guard rows (tasks.<i>.n_guard; "
                                "without them, test accuracy) has not beaten its best for "
                                "this many rounds")
    when_nothing_added: bool = Field(
        True, description="stop when a round adds no rows (no errors left, or none accepted): "
                          "the next round would train on the same rows from the same base "
                          "model and repeat this one")
