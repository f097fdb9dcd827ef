"""Strategies and `compare` with fake backends: who the teacher is asked about, at what
budget, how each trains, and the fix rate from lineage."""

import json
import random
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.compare import compare_rows, format_compare
from engine.config import RunConfig, StrategyConfig
from engine.driver import RoundLoop
from engine.metrics import fix_rates, guard_fix_rate
from engine.records import EXAMPLE, PREDICTION
from engine.strategies import RoundView, build_strategy
from engine.tasks import build_task
from tests.fakes import FakeGenerator, FakeTrainer, KeyedTeacher
from tests.unit.test_driver import teacher


def knowing_student(task):
    """Right on the questions whose crc is even, wrong on the others."""
    answers = {row["input"]: row["label"] for split in task.seed_and_test() for row in split}

    def respond(messages):
        question = next(q for q in answers if q in messages[-1]["content"])
        return f"#### {answers[question]}" if zlib.crc32(question.encode()) % 2 == 0 else "?"
    return respond


def compare_loop(tmp_path, strategies, seeds=(0, 1), rounds=3, match="targets",
                 teacher=teacher, teacher_gen=None, **strategy):
    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "rounds": rounds, "strategy": strategy,
        "compare": {"strategies": strategies, "seeds": list(seeds), "match": match},
        # the fake teacher repeats itself for a repeated error: every round must still run
        "stop": {"when_nothing_added": False},
        "tasks": [{"name": "arithmetic", "n_seed": 12, "n_test": 6}]})
    tasks = [build_task(t, cfg.seed) for t in cfg.tasks]
    gen_s, gen_t = FakeGenerator(knowing_student(tasks[0])), teacher_gen or FakeGenerator(teacher)
    trainer = FakeTrainer()
    loop = RoundLoop(cfg, tasks, "base", "teacher", gen_s, gen_t, trainer, log=lambda m: None)
    history = [m for ms in loop.run() for m in ms]
    return cfg, history, gen_t, trainer


def by_unit(history):
    out = {}
    for m in history:
        out.setdefault((m["strategy"], m["train_seed"]), []).append(m)
    return out


def test_baselines_send_as_many_requests_as_llm2llm_for_other_rows(tmp_path):
    cfg, history, gen_t, trainer = compare_loop(
        tmp_path, ["random", "seed_only", "llm2llm", "mixed"])
    units = by_unit(history)
    for seed in (0, 1):
        ref = units[("llm2llm", seed)]
        for name in ("random", "mixed"):
            for m, m_ref in zip(units[(name, seed)][:2], ref[:2]):  # augmenting rounds
                assert m["n_targets"] == m_ref["n_targets"] == m_ref["n_errors"] > 0
        # seed_only: one training, no teacher, no later rounds (they would repeat round 0)
        assert [m["round"] for m in units[("seed_only", seed)]] == [0]
        assert units[("seed_only", seed)][0]["n_targets"] is None
    # llm2llm asked the teacher about its errors only; random about other seed rows too
    root = tmp_path / "run" / "arithmetic"
    asked = lambda name: set(pq.read_table(  # noqa: E731
        root / name / "seed_0" / "round_0" / "augment" / "part-0.parquet")["seed_id"].to_pylist())
    mined = set(pq.read_table(root / "llm2llm" / "seed_0" / "round_0" / "mine" /
                              "part-0.parquet")["id"].to_pylist())
    assert asked("llm2llm") == mined and asked("random") - mined
    # per seed: round 0 once for all four, rounds 1 and 2 for the three that augment, less
    # llm2llm's round 2: the repeating fake teacher added nothing in round 1, so round 2
    # would train the same student on the same rows and copies round 1's
    for seed in (0, 1):
        assert units[("llm2llm", seed)][1]["n_accepted"] == 0
        manifest = json.loads((root / "llm2llm" / f"seed_{seed}" / "round_2" / "train" /
                               "MANIFEST.json").read_text())
        assert manifest["copied_from"] == f"arithmetic/llm2llm/seed_{seed}"
        assert manifest["copied_from_round"] == 1
    assert len(trainer.seeds) == 2 * (1 + 3 * 2 - 1)
    assert sorted(set(trainer.seeds)) == [0, 1]


def test_round_0_is_computed_once_per_task_and_seed_and_copied_to_the_others(tmp_path):
    cfg, history, gen_t, trainer = compare_loop(tmp_path, ["llm2llm", "random", "seed_only"],
                                                seeds=[0, 1], rounds=2)
    trained = [call[2].split("/arithmetic/")[1] for call in trainer.calls]
    assert sorted(t for t in trained if "round_0" in t) == [
        "llm2llm/seed_0/round_0/train/model", "llm2llm/seed_1/round_0/train/model"]
    units = by_unit(history)
    for seed in (0, 1):
        r0 = [units[(name, seed)][0] for name in ("llm2llm", "random", "seed_only")]
        assert len({(m["test_accuracy"], m["n_errors"]) for m in r0}) == 1
        assert units[("random", seed)][0]["n_targets"] == r0[0]["n_targets"]  # then its own
    copied = tmp_path / "run" / "arithmetic" / "random" / "seed_1" / "round_0"
    manifest = json.loads((copied / "predict" / "MANIFEST.json").read_text())
    assert manifest["copied_from"] == "arithmetic/llm2llm/seed_1"
    assert (copied / "train" / "model" / "config.json").is_file()
    generated = pq.read_table(copied / "predict" / "generations.parquet")
    assert all(generated["cached"].to_pylist())  # nothing was generated for this unit
    # round 1 is each strategy's own
    assert any("random/seed_0/round_1/train" in t for t in trained)


def test_random_and_mixed_targets_from_a_hand_made_round():
    seed = [dict(id=f"s{i}", task="t", input=f"q{i}", target="a", label="1", origin="seed",
                 round=-1, seed_id=f"s{i}", trigger_prediction="out", teacher_model="",
                 prompt_hash="", sampling="") for i in range(10)]
    mining = pa.Table.from_pylist(seed, schema=EXAMPLE)
    errors = mining.slice(0, 4)
    view = RoundView(errors=errors, mining=mining, budget=6, rng=random.Random(0))
    llm2llm = build_strategy(StrategyConfig()).targets(view)
    assert llm2llm["id"].to_pylist() == ["s0", "s1", "s2", "s3"]
    rand = build_strategy(StrategyConfig(name="random")).targets(view)
    assert rand.num_rows == 6 and len(set(rand["id"].to_pylist())) == 6
    mixed = build_strategy(StrategyConfig(name="mixed", targeted_share=0.5)).targets(view)
    ids = mixed["id"].to_pylist()
    assert len(ids) == 6 == len(set(ids))
    assert sum(i in {"s0", "s1", "s2", "s3"} for i in ids) == 3  # half the budget aimed
    no_ref = RoundView(errors=errors, mining=mining, budget=None, rng=random.Random(0))
    assert build_strategy(StrategyConfig(name="random")).targets(no_ref).num_rows == 4


def test_keep_label_mix_spreads_the_targets_over_the_labels_as_the_mined_rows_are():
    # 12 validation rows, 6 of each label; the student answered "yes" to all: its 6 errors
    # are all "no" rows (as on RTE)
    rows = [dict(id=f"v{i}", task="t", input=f"q{i}", target=label, label=label,
                 origin="validation", round=-1, seed_id=f"v{i}", trigger_prediction="yes",
                 teacher_model="", prompt_hash="", sampling="")
            for i, label in enumerate(["yes", "no"] * 6)]
    mining = pa.Table.from_pylist(rows, schema=EXAMPLE)
    errors = mining.filter(pa.array([r["label"] == "no" for r in rows]))
    view = RoundView(errors=errors, mining=mining, budget=None, rng=random.Random(0),
                     task="t", labels=("yes", "no"))
    assert build_strategy(StrategyConfig(name="llm2llm")).targets(view)["label"].to_pylist() \
        == ["no"] * 6  # by default: the errors, all of one label
    kept = build_strategy(StrategyConfig(name="s3", keep_label_mix=True)).targets(view)
    assert kept.num_rows == 6  # as many requests as errors: the budget is unchanged
    assert sorted(kept["label"].to_pylist()) == ["no"] * 3 + ["yes"] * 3
    ids = kept["id"].to_pylist()
    assert len(set(ids)) == 6 and all(i in mining["id"].to_pylist() for i in ids)
    # the "no" half are errors; the "yes" half rows the student got right
    assert set(kept.filter(pa.array([l == "no" for l in kept["label"].to_pylist()]))["id"]
               .to_pylist()) <= set(errors["id"].to_pylist())
    # a task without labels (arithmetic): the errors, unchanged
    no_labels = RoundView(errors=errors, mining=mining, budget=None, rng=random.Random(0))
    assert build_strategy(StrategyConfig(keep_label_mix=True)).targets(no_labels) == errors


def test_stratified_errors_keep_no_label_above_its_share_and_only_errors():
    """s3's default (strategy.stratify_errors): of 9 "no" errors and 2 "yes" errors among 12
    mined rows half of each label, at most 6 "no" (half of 11) and both "yes"; never a row
    the student got right; within a budget, each label its share of it."""
    rows = [dict(id=f"v{i}", task="t", input=f"q{i}", target=label, label=label,
                 origin="validation", round=-1, seed_id=f"v{i}", trigger_prediction="?",
                 teacher_model="", prompt_hash="", sampling="")
            for i, label in enumerate(["no"] * 10 + ["yes"] * 10)]
    mining = pa.Table.from_pylist(rows, schema=EXAMPLE)
    wrong = {f"v{i}" for i in [*range(9), 10, 11]}
    errors = mining.filter(pa.array([r["id"] in wrong for r in rows]))
    s3 = build_strategy(StrategyConfig(name="s3"))
    assert s3.settings.stratify_errors
    view = lambda budget: RoundView(errors=errors, mining=mining, budget=budget,  # noqa: E731
                                    rng=random.Random(0), task="t", labels=("no", "yes"))
    picked = s3.targets(view(None))
    assert sorted(picked["label"].to_pylist()) == ["no"] * 6 + ["yes"] * 2
    assert set(picked["id"].to_pylist()) <= wrong
    assert sorted(s3.targets(view(4))["label"].to_pylist()) == ["no"] * 2 + ["yes"] * 2
    plain = build_strategy(StrategyConfig(name="s3", stratify_errors=False))
    assert plain.targets(view(None)).num_rows == 11
    # one error: asked about, whatever its label (a cap never rounds a label down to none)
    one = RoundView(errors=errors.slice(10, 1), mining=mining, budget=None,
                    rng=random.Random(0), task="t", labels=("no", "yes"))
    assert s3.targets(one)["id"].to_pylist() == ["v11"]
    assert s3.targets(view(0)).num_rows == 0


def test_an_ablation_variant_asks_about_at_most_its_plain_units_budget():
    """Issue 33: `llm2llm+mine_all`, `+continue`, `+label_mix` asked about all their own
    errors; in a compare (where `budget` is plain llm2llm's targets this round) they ask
    about at most as many, drawn from their errors, so a variant differs in aim, not size."""
    rows = [dict(id=f"s{i}", task="t", input=f"q{i}", target="a", label=("yes", "no")[i % 2],
                 origin="seed", round=-1, seed_id=f"s{i}", trigger_prediction="out",
                 teacher_model="", prompt_hash="", sampling="") for i in range(12)]
    mining = pa.Table.from_pylist(rows, schema=EXAMPLE)
    errors = mining.slice(0, 9)  # the variant's student got 9 wrong; plain llm2llm asked 4
    view = RoundView(errors=errors, mining=mining, budget=4, rng=random.Random(0), task="t",
                     labels=("yes", "no"))
    for settings in [{"mine_from": "all"}, {"from_base": False}, {"keep_label_mix": True}]:
        targets = build_strategy(StrategyConfig(**settings)).targets(view)
        assert targets.num_rows == 4, settings
        assert len(set(targets["id"].to_pylist())) == 4
    plain = RoundView(errors=errors, mining=mining, budget=None, rng=random.Random(0))
    assert build_strategy(StrategyConfig()).targets(plain).num_rows == 9  # it sets the budget


def uneven_teacher(messages):
    """The fake teacher, but for half the prompts (by crc) its second problem repeats its
    first, a near copy the gates reject: yield differs between targets, so top-up asks and
    rows accepted differ between strategies asking about different rows."""
    out = teacher(messages)
    prompt = messages[-1]["content"]
    if zlib.crc32(prompt.encode()) % 2 and not prompt.startswith("Solve the math"):
        first = out.strip().split("\n")[:3]
        out = "\n".join(first + first) + "\n"
    return out


@pytest.mark.parametrize("match", ["requests", "rows"])
def test_each_variant_and_baseline_spends_plain_llm2llms_budget(tmp_path, match):
    """compare.match: the baselines and switch variants send as many teacher requests as
    plain llm2llm did that round (requests), or keep as many rows as it accepted (rows);
    `+scale=2` twice as many. A unit with fewer rows to ask about than the budget spends at
    most it."""
    variants = ["llm2llm+continue", "llm2llm+label_mix", "random", "mixed"]
    cfg, history, gen_t, trainer = compare_loop(
        tmp_path, ["llm2llm", *variants, "random+scale=0.5", "zerogen+scale=2"], seeds=[0],
        match=match, teacher=uneven_teacher)
    units = by_unit(history)
    plain = units[("llm2llm", 0)][:2]  # the rounds that ask
    spent = "n_requests" if match == "requests" else "n_accepted"
    assert plain[0]["n_requests"] > plain[0]["n_targets"]  # top-up asks happened
    for name in variants:
        for m, ref in zip(units[(name, 0)][:2], plain):
            assert m[spent] == ref[spent], (name, m["round"])
            assert m["budget_matched"] == {"by": match, "budget": ref[spent]}
    halved = units[("random+scale=0.5", 0)][0]
    assert halved["budget_matched"]["budget"] == round(plain[0][spent] * 0.5)
    assert 0 < halved[spent] <= halved["budget_matched"]["budget"]
    if match == "requests":  # zerogen's label slots are never short of prompts to ask
        doubled = [m["n_requests"] for m in units[("zerogen+scale=2", 0)][:2]]
        assert doubled == [2 * m["n_requests"] for m in plain]
    else:  # a round whose budget is no rows asks nothing
        assert all(m["n_requests"] == 0 for name in variants
                   for m, ref in zip(units[(name, 0)][:2], plain) if ref["n_accepted"] == 0)
    # the setter is never capped by itself
    assert plain[0]["budget_matched"] is None
    rows = compare_rows(cfg)
    assert {r["strategy"]: r["rows_added"] for r in rows if r["round"] == 0}["llm2llm"] == \
        plain[0]["n_accepted"]


def test_label_mix_is_a_compare_switch():
    from engine.config import strategy_variant

    assert strategy_variant("s3+label_mix") == {"name": "s3", "mine_from": "validation",
                                                "rows_per_error": 1, "stratify_errors": True,
                                                "keep_label_mix": True}


@pytest.mark.parametrize("spec", ["random+label_mix", "random+stratify", "mixed+label_mix",
                                  "zerogen+stratify"])
def test_error_shaping_switches_are_refused_where_no_errors_are_aimed_at(spec):
    """random, mixed and zerogen draw their own targets (never Strategy.aimed): +label_mix or
    +stratify on them changed nothing and ran a unit named as if it did."""
    from engine.config import CompareConfig, strategy_variant

    with pytest.raises(ValueError, match="would change nothing.*llm2llm\\+"):
        strategy_variant(spec)
    with pytest.raises(ValueError, match="would change nothing"):
        CompareConfig(strategies=["llm2llm", spec])
    assert strategy_variant("llm2llm+stratify")["stratify_errors"] is True


def test_a_config_that_shapes_errors_of_a_strategy_that_draws_its_own_is_refused():
    """The same in a plain config: `strategy: {name: random, keep_label_mix: true}` ran
    random unchanged. In a compare the section is every unit's shared settings, so it stands
    there (llm2llm's units take it; random's leave it be)."""
    from engine.config import RunConfig

    tasks = [{"name": "arithmetic"}]
    with pytest.raises(ValueError, match="strategy: keep_label_mix .*random draws its targets "
                                         "otherwise.*Leave keep_label_mix out"):
        RunConfig(tasks=tasks, strategy={"name": "random", "keep_label_mix": True})
    with pytest.raises(ValueError, match="tasks.arithmetic.strategy: stratify_errors"):
        RunConfig(tasks=[{"name": "arithmetic",
                          "strategy": {"name": "mixed", "stratify_errors": True}}])
    assert RunConfig(tasks=tasks, strategy={"name": "llm2llm", "keep_label_mix": True})
    assert RunConfig(tasks=tasks, strategy={"name": "random", "keep_label_mix": True},
                     compare={"strategies": ["llm2llm", "random"]})


def test_ablations_continue_training_and_spend_the_budget_at_once(tmp_path):
    cfg, history, gen_t, trainer = compare_loop(
        tmp_path, ["llm2llm"], seeds=[0], from_base=False, one_shot=True)
    r0, r1, r2 = history
    bases = [call[1] for call in trainer.calls]
    assert bases[0] == "base" and bases[1].endswith("round_0/train/model")
    assert bases[2].endswith("round_1/train/model")
    assert len(gen_t.calls) >= 1 and r1["n_targets"] is None  # round 1 asks nothing
    assert r0["n_rows_asked"] == r0["n_targets"] * 2 * 2  # n_per_error x (rounds - 1)


def test_compare_sweeps_ablation_switches_as_units_of_their_own(tmp_path):
    cfg, history, gen_t, trainer = compare_loop(
        tmp_path, ["llm2llm", "llm2llm+one_shot+continue", "random"], seeds=[0])
    units = by_unit(history)
    plain, ablated, rand = (units[(n, 0)] for n in
                            ("llm2llm", "llm2llm+one_shot+continue", "random"))
    assert plain[1]["n_targets"] and ablated[1]["n_targets"] is None  # one_shot: r0 only
    assert ablated[0]["n_rows_asked"] == ablated[0]["n_targets"] * 2 * 2
    # the budget is plain llm2llm's, never the variant's
    assert [m["n_targets"] for m in rand[:2]] == [m["n_targets"] for m in plain[:2]]
    bases = {call[2].split("/arithmetic/")[1]: call[1] for call in trainer.calls}
    assert bases["llm2llm+one_shot+continue/seed_0/round_2/train/model"].endswith(
        "llm2llm+one_shot+continue/seed_0/round_1/train/model")
    # plain llm2llm trains each round from the base model; its round 2 (round 1 added nothing:
    # the fake teacher repeats itself) is round 1's student, copied
    plain_r2 = json.loads((tmp_path / "run" / "arithmetic" / "llm2llm" / "seed_0" / "round_2" /
                           "train" / "MANIFEST.json").read_text())
    assert bases["llm2llm/seed_0/round_1/train/model"] == "base"
    assert plain_r2["info"]["base_model"] == "base" and plain_r2["copied_from_round"] == 1
    assert {r["strategy"] for r in compare_rows(cfg)} == {
        "llm2llm", "llm2llm+one_shot+continue", "random"}
    from engine.provenance import save_run_record
    from engine.status import stage_states

    save_run_record(cfg, "base", "teacher")
    states = {(r["task"], r["round"]): r["augment"] for r in stage_states(cfg.run_dir)[0]}
    assert states[("arithmetic/llm2llm+one_shot+continue/seed_0", 1)] == "-"  # asks in r0 only
    assert states[("arithmetic/llm2llm/seed_0", 1)] == "done"


@pytest.mark.parametrize("spec, message", [
    ("llm2llm+fast", "'fast' is not a switch of llm2llm"),
    ("seed_only+one_shot", "seed_only takes with_validation only"),
    ("llm2llm+with_validation", "the seed_only floor's"),
    ("mixed+share=lots", "share takes a number"),
    ("mixed+share=1.5", "less than or equal to 1"),
    ("random+scale=0", "greater than 0"),
    ("seed_only+scale=2", "seed_only takes with_validation only"),
    ("s4", "unknown strategy 's4'"),
])
def test_a_bad_compare_entry_names_the_fix(spec, message):
    from engine.errors import ConfigError
    from engine.config import load_config

    with pytest.raises(ConfigError, match=message):
        load_config(None, ["tasks=[{name: arithmetic}]", f"compare.strategies=[{spec}]"])


def test_compare_table_aggregates_seeds_and_carries_seed_only_forward(tmp_path):
    cfg, history, *_ = compare_loop(tmp_path, ["llm2llm", "seed_only"], rounds=2)
    rows = compare_rows(cfg)
    assert [(r["strategy"], r["round"], r["seeds"]) for r in rows] == [
        ("llm2llm", 0, 2), ("llm2llm", 1, 2), ("seed_only", 0, 2), ("seed_only", 1, 2)]
    units = by_unit(history)
    accs = [units[("llm2llm", s)][1]["test_accuracy"] for s in (0, 1)]
    assert rows[1]["test_accuracy_mean"] == pytest.approx(sum(accs) / 2)
    assert rows[3]["test_accuracy_by_seed"] == rows[2]["test_accuracy_by_seed"]
    assert "seed_only" in format_compare(rows)


def test_compare_shows_the_most_one_sided_seeds_answer_share(tmp_path):
    """A seed whose student answers one label shows in the table whatever the mean says."""
    from engine.config import load_config
    from engine.storage import RunStorage

    cfg = load_config(None, ["tasks=[{name: arithmetic}]", f"run_dir={tmp_path}",
                             "compare.strategies=[llm2llm]", "compare.seeds=[0,1]", "rounds=1"])
    store = RunStorage(cfg.run_dir)
    for seed, share in ((0, 0.55), (1, 1.0)):
        metrics = dict(test_accuracy=0.5, fix_rate=None, teacher_yield=None, n_synthetic=0,
                       n_requests=0, n_accepted=0, tokens=0, test_top_answer_share=share,
                       guard_fix_rate=share / 2)
        store.write_json(f"{store.round_dir(f'arithmetic/llm2llm/seed_{seed}', 0)}/metrics.json",
                         metrics)
    [row] = compare_rows(cfg)
    assert row["seeds"] == 2 and row["top_answer_share_max"] == 1.0
    assert row["guard_fix_rate_mean"] == pytest.approx((0.55 + 1.0) / 4)
    table = format_compare([row])
    assert "top_answer" in table.splitlines()[0] and "1.00" in table
    assert "guard_fixed" in table.splitlines()[0] and "0.39" in table


def test_fix_rate_from_a_hand_made_lineage():
    def preds(correct: dict) -> pa.Table:
        return pa.Table.from_pylist([dict(id=i, task="t", split="train", origin="seed",
                                          output="", extracted="", correct=c,
                                          completion_tokens=0, error="")
                                     for i, c in correct.items()], schema=PREDICTION)

    before = preds({"a": False, "b": False, "c": False, "d": True, "e": True})
    mined = pa.table({"id": ["a", "b", "c"]})
    now = preds({"a": True, "b": True, "c": False, "d": False, "e": True})
    fixed, broke = fix_rates((before, mined), now)
    assert fixed == pytest.approx(2 / 3) and broke == pytest.approx(1 / 2)
    assert fix_rates(None, now) == (None, None)


def test_guard_fix_rate_counts_only_guard_rows_wrong_last_round():
    """The held-out counterpart of the fix rate: of the guard rows wrong before, the share
    right now; mining and test rows, and guard rows right before, do not count."""
    def preds(rows: list[tuple[str, str, bool]]) -> pa.Table:
        return pa.Table.from_pylist([dict(id=i, task="t", split=split, origin=split,
                                          output="", extracted="", correct=c,
                                          completion_tokens=0, error="")
                                     for i, split, c in rows], schema=PREDICTION)

    before = preds([("g1", "guard", False), ("g2", "guard", False), ("g3", "guard", False),
                    ("g4", "guard", True), ("m1", "train", False), ("t1", "test", False)])
    now = preds([("g1", "guard", True), ("g2", "guard", False), ("g3", "guard", False),
                 ("g4", "guard", False), ("m1", "train", True), ("t1", "test", True)])
    mined = pa.table({"id": ["m1"]})
    assert guard_fix_rate((before, mined), now) == pytest.approx(1 / 3)
    assert fix_rates((before, mined), now)[0] == 1.0  # the mined row: far above, as on RTE
    assert guard_fix_rate(None, now) is None
    no_guard = preds([("m1", "train", False)])
    assert guard_fix_rate((no_guard, mined), no_guard) is None


def test_compare_units_have_their_own_folders_and_status(tmp_path):
    from engine.provenance import save_run_record
    from engine.status import stage_states

    cfg, *_ = compare_loop(tmp_path, ["llm2llm", "seed_only"], seeds=[3], rounds=2)
    save_run_record(cfg, "base", "teacher")
    rows, _ = stage_states(cfg.run_dir)
    assert [(r["task"], r["round"], r["augment"]) for r in rows] == [
        ("arithmetic/llm2llm/seed_3", 0, "done"), ("arithmetic/llm2llm/seed_3", 1, "-"),
        ("arithmetic/seed_only/seed_3", 0, "-")]
    metrics = json.loads((tmp_path / "run" / "arithmetic" / "llm2llm" / "seed_3" / "round_1"
                          / "metrics.json").read_text())
    assert metrics["strategy"] == "llm2llm" and metrics["train_seed"] == 3


def test_zerogen_asks_from_the_description_alone_at_the_same_budget(tmp_path):
    cfg, history, gen_t, _ = compare_loop(tmp_path, ["llm2llm", "zerogen"], seeds=[0])
    units = by_unit(history)
    for m, ref in zip(units[("zerogen", 0)][:2], units[("llm2llm", 0)][:2]):
        assert m["n_targets"] == ref["n_targets"] > 0
    asked = [json.loads(m) for stage, _, req in gen_t.calls if stage == "augment" for rid, m in
             zip(req["request_id"].to_pylist(), req["messages"].to_pylist())
             if rid.startswith("desc")]
    assert asked and all(len(m) == 2 and "new math word problems" in m[-1]["content"]
                         for m in asked)  # system + request: no seed row, no one-shot
    # the label slots share one prompt; each is its own draw (its own cache entry), not the
    # first slot's cached answer again
    from engine.generation.cache import cache_key

    ask = [req for stage, _, req in gen_t.calls if stage == "augment"
           and req["request_id"][0].as_py().startswith("desc")][0]
    assert len(set(ask["messages"].to_pylist())) < ask.num_rows
    keys = {cache_key("t", m, s, 0, None, n) for m, s, n in zip(
        ask["messages"].to_pylist(), ask["sampling"].to_pylist(), ask["sample"].to_pylist())}
    assert len(keys) == ask.num_rows
    rows = pq.read_table(tmp_path / "run" / "arithmetic" / "zerogen" / "seed_0" / "round_0" /
                         "augment" / "part-0.parquet").to_pylist()
    assert rows and all(r["seed_id"].startswith("description:arithmetic:") for r in rows)


def test_zerogen_without_its_template_is_refused_at_preflight(tmp_path, monkeypatch):
    from engine.errors import ConfigError
    from engine.job import preflight

    prompts = tmp_path / "p.yaml"
    prompts.write_text("student: '{question}'\nteacher_system: s\nteacher_user: '{question}'\n")
    path = tmp_path / "job.yaml"
    path.write_text(f"run_dir: {tmp_path / 'run'}\n"
                    f"tasks: [{{name: arithmetic, n_seed: 4, prompts: {prompts}}}]\n")
    with pytest.raises(ConfigError, match="strategy zerogen needs a `zerogen_user` template"):
        preflight(str(path), ["strategy.name=zerogen"], resolve_models=False)


def test_mine_validation_switch_aims_llm2llm_at_the_real_validation_rows():
    from engine.config import strategy_variant

    assert strategy_variant("llm2llm+mine_validation") == {"name": "llm2llm",
                                                            "mine_from": "validation"}
    assert strategy_variant("mixed+mine_validation+share=0.25") == {
        "name": "mixed", "mine_from": "validation", "targeted_share": 0.25}


def test_each_training_seed_asks_the_teacher_for_its_own_draw(tmp_path):
    """The spread over seeds includes the teacher's: seed s's asks carry draw=s (a cache key
    of its own), its greedy answer checks none (the same check is the same answer)."""
    _, history, gen_t, _ = compare_loop(tmp_path, ["llm2llm", "random"], seeds=(0, 1), rounds=2)
    draws = {}
    for (stage, _, requests), group in zip(gen_t.calls, gen_t.groups):
        seed = int(group.rsplit("seed_", 1)[1])
        got = set(requests.column("draw").to_pylist()) if "draw" in requests.column_names \
            else None
        draws.setdefault((stage, seed), set()).add(frozenset(got) if got else None)
    assert draws[("augment", 0)] == {frozenset({0})}
    assert draws[("augment", 1)] == {frozenset({1})}
    assert draws[("check", 0)] == draws[("check", 1)] == {None}


def test_an_error_asked_again_in_a_later_round_gets_new_answers_not_round_0s(tmp_path):
    """The response cache keys a request by its messages and sample, not its round: an error
    still wrong a round later, with the same wrong answer, is round 0's exact prompt, and
    with round 0's sample the cache answers round 0's rows again, each then a near copy of a
    row already kept (a SST-2 round: 18 of its 39 targets asked again, 50 of its 153
    candidates round 0's). A later round asks with samples of its own."""
    from engine.generation.cache import cache_key

    _, _, gen_t, _ = compare_loop(tmp_path, ["llm2llm"], seeds=(0,), rounds=3,
                                  teacher_gen=KeyedTeacher(teacher))
    asks = {}
    for stage, _, req in gen_t.calls:
        if stage != "augment":
            continue
        for rid, keyed, s, n, d in zip(*(req[c].to_pylist() for c in (
                "request_id", "messages", "sampling", "sample", "draw"))):
            *before, last = json.loads(keyed)  # the request as asked, without the key shown
            m = json.dumps([*before, {**last, "content": last["content"].rsplit("\n(sample", 1)[0]}])
            asks.setdefault(int(rid.split("@r")[1].split("~")[0]), []).append(
                (m, cache_key("teacher", m, s, d, None, n)))
    messages = lambda r: {m for m, _ in asks[r]}  # noqa: E731
    keys = lambda r: {k for _, k in asks[r]}  # noqa: E731
    assert messages(0) & messages(1)  # the knowing student misses the same rows again
    assert not keys(0) & keys(1)
    unit = tmp_path / "run" / "arithmetic" / "llm2llm" / "seed_0"
    rows = lambda r: pq.read_table(unit / f"round_{r}" / "augment" /  # noqa: E731
                                   "part-0.parquet").to_pylist()
    assert not {x["input"] for x in rows(0)} & {x["input"] for x in rows(1)}
    assert not [x for x in rows(1) if (x["reject_reason"] or "").startswith("duplicate")]
