"""Extractive QA (AdversarialQA): SQuAD exact match and F1, the teacher's question/answer
blocks, and gates that judge the question the teacher wrote, not the context it was given."""

import json
from pathlib import Path

import pyarrow as pa
import pytest

from engine.config import TaskConfig
from engine.records import EXAMPLE
from engine.stages.augment import CandidateFilter
from engine.tasks import build_task
from engine.tasks.qa import exact_match, f1_score, normalize_answer

ADQA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "adversarialqa"
CONTEXT = ("The Hoppings funfair, said to be the largest travelling funfair in Europe, is held "
           "on the Town Moor every June. The moor is larger than Hyde Park and Hampstead Heath "
           "put together, and freemen of the city may graze cattle on it.")


def qa_task(tmp_path, **extra):
    path = tmp_path / "qa.jsonl"
    rows = [{"context": CONTEXT, "question": q, "answers": {"text": [a], "answer_start": [0]}}
            for q, a in (("Where is the Hoppings funfair held?", "the Town Moor"),
                         ("When is the funfair held?", "every June"),
                         ("Who may graze cattle on the moor?", "freemen of the city"),
                         ("What is larger than Hyde Park?", "The moor"))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return build_task(TaskConfig(name="adversarialqa", n_seed=2, n_test=None, n_validation=0,
                                 data={"train": str(path), "test": str(path)}, **extra), 0)


def test_exact_match_and_f1_follow_squad_normalization():
    assert normalize_answer("The  Town-Moor!") == "townmoor"
    assert exact_match("town moor.", ["the Town Moor"]) and not exact_match("moor", ["Town Moor"])
    assert f1_score("the Town Moor", ["Town Moor"]) == 1.0
    assert f1_score("Moor in June", ["Town Moor"]) == pytest.approx(2 * (1 / 3) * (1 / 2) / (5 / 6))
    assert f1_score("Hyde Park", ["Town Moor", "Hyde Park"]) == 1.0  # the best gold counts
    assert f1_score("", ["Town Moor"]) == 0.0


def test_rows_student_grading_and_f1(tmp_path):
    task = qa_task(tmp_path)
    seed, test = task.seed_and_test()
    assert len(seed) == 2 and len(test) == 2  # one labelled split, cut in two
    row = seed[0]
    assert row["input"].startswith(f"Context: {CONTEXT}\nQuestion: ")
    prompt = task.student_messages(row["input"])[0]["content"]
    assert CONTEXT in prompt and prompt.endswith("Answer:")
    assert task.grade("Answer: the Town Moor.\nBecause ...", "the Town Moor") == (
        "the Town Moor", True)
    predictions = pa.table({"split": ["test", "test"], "extracted": ["Town Moor", "June"],
                            "label": ["the Town Moor", "every June"]})
    assert task.round_scores(predictions)["test_f1"] == pytest.approx((1 + 2 / 3) / 2)


def test_teacher_blocks_must_answer_with_a_span_of_the_context(tmp_path):
    task = qa_task(tmp_path)
    seed, _ = task.seed_and_test()
    ask = task.teacher_messages(seed[0], "Hyde Park", 2)[-1]["content"]
    assert CONTEXT in ask and seed[0]["target"] in ask
    out = task.parse_teacher(
        "Question: What is said to be the largest travelling funfair in Europe?\n"
        "Answer: The Hoppings funfair\n"
        "2. Question: What animals may freemen graze on the moor?\nAnswer: horses\n"
        "Question: Park?\nAnswer: Hyde Park\n", seed[0])
    assert out[0].label == "The Hoppings funfair" and not out[0].reject_reason
    assert out[0].input == f"Context: {CONTEXT}\nQuestion: What is said to be the largest " \
                           f"travelling funfair in Europe?"
    assert out[1].reject_reason.startswith("unverified: the answer is not a span")
    assert out[2].reject_reason.startswith("unparsed: question missing or too short")


def test_gates_judge_the_question_not_the_shared_context(tmp_path):
    task = qa_task(tmp_path)
    seed, test = task.seed_and_test()
    target = pa.Table.from_pylist([{**seed[0], "trigger_prediction": "x"}], schema=EXAMPLE)
    new_q = "What is said to be the largest travelling funfair in Europe?"
    copied = seed[1]["input"].split("\nQuestion: ")[1]
    output = (f"Question: {new_q}\nAnswer: The Hoppings funfair\n"
              f"Question: {copied}\nAnswer: {seed[1]['target']}\n")
    requests = pa.table({"request_id": ["r"], "seed_id": [seed[0]["id"]], "sampling": ["{}"]})
    generated = pa.Table.from_pylist([{
        "request_id": "r", "output": output, "prompt_tokens": 1, "completion_tokens": 1,
        "error": "", "cached": False, "attempts": 1, "replica": "x"}])
    filter_ = CandidateFilter(task, 0, "t", 2, [r["input"] for r in seed],
                              [r["input"] for r in test], 0.6)
    rows = filter_.add(target, requests, generated)
    assert rows[0]["accepted"], rows[0]["reject_reason"]  # same context, new question
    assert rows[1]["reject_reason"].startswith("duplicate")  # a training question again


def test_adversarialqa_rows_read_from_the_real_file():
    if not ADQA.is_dir():
        pytest.skip(f"real AdversarialQA data not found at {ADQA}")
    task = build_task(TaskConfig(name="adversarialqa", n_seed=30, n_test=50, data={
        "train": str(ADQA / "validation.jsonl"), "test": str(ADQA / "validation.jsonl")}), 0)
    seed, test = task.seed_and_test()
    assert len(seed) == 30 and len(test) == 50
    assert not {r["id"] for r in seed} & {r["id"] for r in test}
    for row in seed + test:  # every gold answer is a span of its context
        context = row["input"].split("\nQuestion: ")[0]
        assert row["target"] and row["target"] in context
