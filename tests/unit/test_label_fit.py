"""The label-fit gate (engine/gates/label_fit.py): a teacher row whose text reads as another
label than its own is rejected, a hard row near a real row of its label is kept. Tiny fake
embeddings (a text's topic words counted): no encoder, no engine."""

import json

import numpy as np
import pyarrow as pa
import pytest

from engine.config import LabelFitConfig, StrategyConfig, TaskConfig, load_config, strategy_variant
from engine.gates.label_fit import LabelFit
from engine.records import EXAMPLE, GENERATED
from engine.stages.augment import CandidateFilter, label_fit_gate, teacher_requests
from engine.strategies import RoundView, build_strategy
from engine.tasks import build_task

TOPICS = {"goal": 0, "match": 0, "team": 0, "bank": 1, "shares": 1, "profit": 1,
          "army": 2, "war": 2, "troops": 2}


def fake_embed(texts):
    """One dimension per topic (its words counted) and one for everything else, so a text of
    no topic is not the zero vector."""
    out = np.zeros((len(texts), 4), np.float32)
    for i, text in enumerate(texts):
        out[i, 3] = 0.1
        for word in text.lower().split():
            if word in TOPICS:
                out[i, TOPICS[word]] += 1
    return out / np.linalg.norm(out, axis=1, keepdims=True)


REAL = ([("the team won the match", "Sports")] * 6 + [("bank shares rose", "Business")] * 6
        + [("army troops at war", "World")] * 6)


def gate(**rule):
    texts, labels = zip(*REAL)
    return LabelFit(list(texts), list(labels), fake_embed, **{"k": 5, **rule})


def test_a_row_whose_nearest_real_rows_all_have_another_label_is_rejected_naming_it():
    reasons = gate().reasons(["bank profit and shares fell", "a late goal won the match"],
                             ["World", "Sports"])
    assert reasons[0].startswith("label_fit: its 5 nearest real rows are Business (100%")
    assert "not World (0%)" in reasons[0]
    assert reasons[1] == ""


def test_a_hard_row_whose_label_holds_a_fair_share_of_its_nearest_rows_is_kept():
    """An aimed row sits where the student goes wrong: near real rows of its label (often
    its own target) among rows of another. Its label's share of the vote keeps it; one vote
    of five against four of another label does not (on hand-judged TREC rows such rows were
    mostly off-label: RESULTS.md)."""
    texts, labels = zip(*REAL)
    hard = LabelFit([*texts, *["bank shares of the team"] * 2], [*labels, "Sports", "Sports"],
                    fake_embed, k=5)
    assert hard.reasons(["team bank shares"], ["Sports"]) == [""]
    one = LabelFit([*texts, "bank shares of the team"], [*labels, "Sports"], fake_embed, k=5)
    assert one.reasons(["team bank shares"], ["Sports"])[0].startswith("label_fit")


def test_no_label_winning_clearly_rejects_nothing():
    """The vote split between two other labels: a row is only rejected when one of them
    gets min_other_share."""
    split = "army war bank shares"  # half World, half Business among its nearest rows
    # World and Business rows of three topic words each, interleaved: equally near, the
    # nearest six are three of each
    rows = REAL[:6] + [("bank shares profit", "Business"), ("army troops war", "World")] * 6
    texts, labels = zip(*rows)
    even = LabelFit(list(texts), list(labels), fake_embed, k=6, min_other_share=0.6)
    assert even.reasons([split], ["Sports"]) == [""]
    lower = LabelFit(list(texts), list(labels), fake_embed, k=6, min_other_share=0.4)
    assert lower.reasons([split], ["Sports"])[0].startswith("label_fit")


def test_a_row_with_a_little_of_its_label_goes_when_another_clearly_outweighs_it():
    texts, labels = zip(*REAL)
    one_own = LabelFit([*texts, "bank shares team"], [*labels, "Sports"], fake_embed, k=7)
    row = (["bank shares profit"], ["Sports"])  # one vote of seven is its label's
    assert one_own.reasons(*row)[0].startswith("label_fit: its 7 nearest real rows are Business")
    # max_own_share: the most of the vote its own label may hold and the row still go
    lenient = LabelFit([*texts, "bank shares team"], [*labels, "Sports"], fake_embed, k=7,
                       max_own_share=0.1)
    assert lenient.reasons(*row) == [""]


def test_another_label_must_outweigh_the_rows_own_by_other_over_own():
    """Three votes its own, four another's: not a clear win at 2x, rejected at 1.2x."""
    texts, labels = zip(*REAL)
    real = ([*texts, *["bank shares team"] * 3], [*labels, *["Sports"] * 3])
    row = (["bank shares profit team"], ["Sports"])
    assert LabelFit(*real, fake_embed, k=7, max_own_share=0.5).reasons(*row) == [""]
    assert LabelFit(*real, fake_embed, k=7, max_own_share=0.5,
                    other_over_own=1.2).reasons(*row)[0].startswith("label_fit")


def test_a_label_with_fewer_real_rows_than_votes_is_not_judged():
    """TREC's ABBR has 5 real rows of 264, fewer than the 7 that vote: its rows read as
    another label however well they fit ("What is SAFER?" as ENTY), so they are not judged."""
    texts, labels = zip(*REAL)
    rare = LabelFit([*texts, "short for bank"], [*labels, "Abbreviation"], fake_embed, k=5)
    assert rare.reasons(["what is bank shares short for"], ["Abbreviation"]) == [""]
    assert rare.reasons(["bank shares profit"], ["Sports"])[0].startswith("label_fit")


def test_fewer_real_rows_than_votes_judge_nothing():
    few = LabelFit(["bank shares rose", "army at war"], ["Business", "World"], fake_embed, k=5)
    assert few.reasons(["bank profit"], ["Sports"]) == [""]


# -- in the augment stage ---------------------------------------------------------------------

def news_task(tmp_path):
    train = tmp_path / "news.jsonl"
    train.write_text("\n".join(json.dumps({"text": t, "label": lab}) for t, lab in REAL))
    return build_task(TaskConfig(name="news", type="classification",
                                 labels=["World", "Sports", "Business"],
                                 fields={"text": "text", "label": "label"},
                                 data={"train": str(train), "test": str(train)}, n_seed=12), 0)


def test_the_augment_gates_reject_an_off_label_row_and_it_does_not_fill_the_quota(tmp_path):
    task = news_task(tmp_path)
    seed, _ = task.seed_and_test()
    target = next(r for r in seed if r["label"] == "World")
    errors = pa.Table.from_pylist([{**target, "trigger_prediction": "Business"}], schema=EXAMPLE)
    req = teacher_requests(errors, task, n_per_error=1, round_=0, sampling={})
    answer = ("Text: bank profit and shares fell sharply\nLabel: World\n"
              "Text: troops massed as the war went on\nLabel: World\n")
    gen = pa.Table.from_pylist([{"request_id": req["request_id"][0].as_py(), "output": answer,
                                 "prompt_tokens": 1, "completion_tokens": 1, "error": ""}],
                               schema=GENERATED)
    label_rows = pa.table({"input": [t for t, _ in REAL], "label": [lab for _, lab in REAL]})
    fit = label_fit_gate(task, label_rows, LabelFitConfig(k=5), embed=fake_embed)
    rows = CandidateFilter(task, 0, "t", quota=1, known_inputs=[], protected=[],
                           near_dup_threshold=0.6, label_fit=fit).add(errors, req, gen)
    assert [r["accepted"] for r in rows] == [False, True]
    assert rows[0]["reject_reason"].startswith("label_fit: its 5 nearest real rows are Business")


def test_the_gate_is_built_only_for_tasks_whose_labels_name_their_text(tmp_path):
    rows = pa.Table.from_pylist(news_task(tmp_path).seed_and_test()[0], schema=EXAMPLE)
    on = LabelFitConfig(k=5)
    assert label_fit_gate(news_task(tmp_path), rows, on, embed=fake_embed) is not None
    arithmetic = build_task(TaskConfig(name="arithmetic", n_seed=8, n_test=2), 0)
    math_rows = pa.Table.from_pylist(arithmetic.seed_and_test()[0], schema=EXAMPLE)
    assert label_fit_gate(arithmetic, math_rows, on, embed=fake_embed) is None
    assert label_fit_gate(news_task(tmp_path), rows.slice(0, 4), on, embed=fake_embed) is None
    pair = build_task(TaskConfig(name="pairs", type="classification", labels=["yes", "no"],
                                 fields={"text": "a", "text_b": "b", "label": "y"},
                                 data={"train": "x.jsonl"}), 0)
    assert label_fit_gate(pair, rows, on, embed=fake_embed) is None  # entailment: a relation


@pytest.mark.parametrize("mine_from, expected", [("seed", 2), ("validation", 3)])
def test_a_rounds_label_rows_are_the_seed_and_the_validation_rows_it_mines(mine_from, expected):
    def row(i, origin):
        return {**{f.name: "" for f in EXAMPLE}, "id": f"r{i}", "input": f"text {i}",
                "label": "a", "origin": origin, "round": -1}

    train = pa.Table.from_pylist([row(0, "seed"), row(1, "seed"), row(2, "synthetic")],
                                 schema=EXAMPLE)
    validation = pa.Table.from_pylist([row(3, "validation")], schema=EXAMPLE)
    view = RoundView(errors=train.slice(0, 1), mining=train, budget=None,
                     rng=__import__("random").Random(0), labels=("a", "b"), round=1,
                     train_set=train, validation=validation)
    task = build_task(TaskConfig(name="arithmetic"), 0)
    plan = build_strategy(StrategyConfig(mine_from=mine_from)).plan(view, task, 2, 3)
    assert plan.label_rows.num_rows == expected
    assert "text 2" not in plan.label_rows.column("input").to_pylist()  # never a synthetic row


def test_label_fit_is_off_by_default_and_a_compare_switch():
    assert load_config(None, ["tasks=[{name: arithmetic}]"]).teacher.label_fit.enabled is False
    assert strategy_variant("llm2llm+label_fit") == {"name": "llm2llm", "label_fit": True}
    assert StrategyConfig().label_fit is None  # as teacher.label_fit.enabled


def test_units_on_threads_of_one_process_load_the_encoder_once_and_one_at_a_time(monkeypatch):
    """The driver runs units' augment stages on threads: transformers' first imports raced
    ("cannot import name 'AutoModel'", one unit of three failed) and each would hold a copy."""
    import threading
    import time

    from engine.gates import label_fit

    inside, most, loads = [0], [0], []

    def slow_load(model):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.05)
        loads.append(model)
        inside[0] -= 1
        return ("tokenizer", "encoder")

    monkeypatch.setattr(label_fit, "_ENCODERS", {})
    monkeypatch.setattr(label_fit, "_load_encoder", slow_load)
    threads = [threading.Thread(target=label_fit._load, args=("minilm",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and loads == ["minilm"]


def label_fit_job(tmp_path, **settings):
    """A job of a pair task (and, with news=True, a single-text one), real files on disk."""
    def write(name, rows):
        (tmp_path / name).write_text("\n".join(json.dumps(r) for r in rows))
        return str(tmp_path / name)

    def pairs(start):
        return [{"a": f"premise {i}", "b": f"hypothesis {i}", "y": ["yes", "no"][i % 2]}
                for i in range(start, start + 20)]

    tasks = [{"name": "pairs", "type": "classification", "labels": ["yes", "no"],
              "fields": {"text": "a", "text_b": "b", "label": "y"}, "n_seed": 8, "n_test": 8,
              "data": {"train": write("pairs.jsonl", pairs(0)),
                       "test": write("pairs_test.jsonl", pairs(100))}}]
    if settings.pop("news", False):
        def news(start):
            return [{"text": f"news item {i}", "label": ["World", "Sports"][i % 2]}
                    for i in range(start, start + 20)]

        tasks.append({"name": "news", "type": "classification", "labels": ["World", "Sports"],
                      "fields": {"text": "text", "label": "label"},
                      "n_seed": 8, "n_test": 8,
                      "data": {"train": write("news.jsonl", news(0)),
                               "test": write("news_test.jsonl", news(100))}})
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps({"run_dir": str(tmp_path / "run"), "rounds": 2, "tasks": tasks,
                               **settings}))
    return str(job)


def test_label_fit_asked_for_where_no_task_can_be_judged_is_refused_naming_the_fix(tmp_path):
    """On a pair task the gate judges nothing (entailment is a relation between the texts,
    not what the nearest real rows show), so llm2llm+label_fit ran as plain llm2llm: RTE's
    matrix row spent a quarter of its teacher and training time on such copies."""
    from engine.errors import ConfigError
    from engine.job import preflight

    compare = {"compare": {"strategies": ["llm2llm", "llm2llm+label_fit"], "seeds": [0]}}
    with pytest.raises(ConfigError, match="tasks.pairs: pairs is a sentence-pair task.*asked "
                                          "for by llm2llm\\+label_fit.*leave \\+label_fit"):
        preflight(label_fit_job(tmp_path, **compare), [], resolve_models=False)
    with pytest.raises(ConfigError, match="asked for by strategy.label_fit"):
        preflight(label_fit_job(tmp_path, strategy={"label_fit": True}), [],
                  resolve_models=False)
    with pytest.raises(ConfigError, match="asked for by teacher.label_fit.enabled"):
        preflight(label_fit_job(tmp_path), ["teacher.label_fit.enabled=true"],
                  resolve_models=False)
    # not asked for: the gate's default, or seed_only (no teacher rows to judge)
    assert preflight(label_fit_job(tmp_path), [], resolve_models=False).warnings == []
    seed_only = {"compare": {"strategies": ["seed_only"], "seeds": [0]}}
    assert preflight(label_fit_job(tmp_path, **seed_only), ["teacher.label_fit.enabled=true"],
                     resolve_models=False).warnings == []


def test_label_fit_over_tasks_it_judges_and_one_it_cannot_warns_naming_that_one(tmp_path):
    compare = {"compare": {"strategies": ["llm2llm", "llm2llm+label_fit"], "seeds": [0]}}
    prepared = preflight_of(label_fit_job(tmp_path, news=True, **compare))
    assert len(prepared.warnings) == 1
    assert prepared.warnings[0].startswith("tasks.pairs: pairs is a sentence-pair task")
    assert "its units would run as without it" in prepared.warnings[0]


def preflight_of(job):
    from engine.job import preflight

    return preflight(job, [], resolve_models=False)
