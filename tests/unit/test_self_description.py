"""The self_description gate in a round: a teacher row that names a label and talks about the
task ("The film review contains a positive sentiment.") is rejected, judged by the words of
the real texts the round may read (seed and validation rows), whichever strategy plans it."""

import json
import random

import pyarrow as pa
import pytest

from engine.config import StrategyConfig, TaskConfig
from engine.records import EXAMPLE
from engine.stages.augment import CandidateFilter, teacher_requests
from engine.strategies import RoundView, build_strategy
from engine.tasks import build_task
from tests.fakes import answered

REAL = [("a gripping , funny and tender film", "positive"),
        ("the plot is thin and the movie drags", "negative"),
        ("warm performances carry it", "positive"), ("a tedious , joyless mess", "negative")] * 3


def sst2_like(tmp_path):
    train = tmp_path / "reviews.jsonl"
    train.write_text("\n".join(json.dumps({"text": t, "label": lab}) for t, lab in REAL))
    return build_task(TaskConfig(name="reviews", type="classification",
                                 labels=["negative", "positive"],
                                 description="Classify the sentiment of the movie review sentence.",
                                 fields={"text": "text", "label": "label"},
                                 data={"train": str(train), "test": str(train)}, n_seed=8), 0)


def answers(task, real_texts):
    seed, _ = task.seed_and_test()
    target = next(r for r in seed if r["label"] == "positive")
    errors = pa.Table.from_pylist([{**target, "trigger_prediction": "negative"}], schema=EXAMPLE)
    req = teacher_requests(errors, task, n_per_error=2, round_=0, sampling={})
    answer = ("Text: The film review contains a positive sentiment.\nLabel: positive\n"
              "Text: a sly , generous comedy that earns its tears\nLabel: positive\n")
    return CandidateFilter(task, 0, "t", quota=2, known_inputs=[], protected=[],
                           near_dup_threshold=0.6, real_texts=real_texts).add(
        errors, req, answered(req, answer))


def test_a_row_that_describes_an_example_is_rejected_by_the_real_texts_words(tmp_path):
    task = sst2_like(tmp_path)
    rows = answers(task, [t for t, _ in REAL])
    assert [r["accepted"] for r in rows] == [False, True]
    assert rows[0]["reject_reason"].startswith(
        "self_description: names the label word 'positive' and talks about the task")
    # no real texts known: nothing tells the task's words from talk, both are kept
    assert [r["accepted"] for r in answers(task, [])] == [True, True]


@pytest.mark.parametrize("settings", [
    dict(name="llm2llm"), dict(name="llm2llm", mine_from="validation"), dict(name="zerogen"),
    dict(name="s3"), dict(name="random")])
def test_every_strategys_round_reads_the_seed_and_validation_texts_never_synthetic_ones(
        settings):
    def row(i, origin):
        return {**{f.name: "" for f in EXAMPLE}, "id": f"r{i}", "input": f"text {i}",
                "label": "a", "origin": origin, "round": -1}

    train = pa.Table.from_pylist([row(0, "seed"), row(1, "seed"), row(2, "synthetic")],
                                 schema=EXAMPLE)
    validation = pa.Table.from_pylist([row(3, "validation")], schema=EXAMPLE)
    view = RoundView(errors=train.slice(0, 1), mining=train, budget=1, rng=random.Random(0),
                     task="reviews", labels=("a", "b"), round=1, train_set=train,
                     validation=validation)
    task = build_task(TaskConfig(name="sst2", data={"train": "x.jsonl", "test": "y.jsonl"}), 0)
    plan = build_strategy(StrategyConfig(**settings)).plan(view, task, 2, 3)
    assert sorted(plan.real_texts) == ["text 0", "text 1", "text 3"]
