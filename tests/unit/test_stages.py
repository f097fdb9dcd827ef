import json

import pyarrow as pa

from engine.config import TaskConfig
from engine.records import CANDIDATE, EXAMPLE, GENERATED
from engine.stages.augment import (AnswerCheck, CandidateFilter, accepted_examples, ask_teacher,
                                   teacher_requests)
from engine.stages.mine import mine_errors
from engine.metrics import accuracy
from engine.stages.predict import grade, student_requests
from engine.tasks import build_task

TASK = build_task(TaskConfig(name="arithmetic", n_seed=4, n_test=2), 0)


def examples():
    seed, test = TASK.seed_and_test()
    synthetic = {**seed[0], "id": "syn-1", "origin": "synthetic", "round": 0}
    return pa.Table.from_pylist(seed + [synthetic], schema=EXAMPLE), test


def generated(pairs):
    return pa.Table.from_pylist([{"request_id": rid, "output": out, "prompt_tokens": 1,
                                  "completion_tokens": 1, "error": err}
                                 for rid, out, err in pairs], schema=GENERATED)


def test_grade_joins_by_id_and_failed_rows_are_wrong():
    train, _ = examples()
    rows = train.to_pylist()
    gen = generated([(rows[0]["id"], f"#### {rows[0]['label']}", ""),
                     (rows[1]["id"], "", "engine said no")])
    preds = grade(train, gen, TASK, "train").to_pylist()
    assert preds[0]["correct"] is True
    assert preds[1]["correct"] is False and preds[1]["error"] == "engine said no"
    assert preds[2]["error"] == "missing output"
    assert accuracy(grade(train, gen, TASK, "train"), "train") == 1 / 5


def test_student_requests_one_per_example():
    train, _ = examples()
    req = student_requests(train, TASK, {"temperature": 0.0, "max_tokens": 8})
    assert req.column("request_id").to_pylist() == train.column("id").to_pylist()
    assert set(req.column("sampling").to_pylist()) == {'{"max_tokens": 8, "temperature": 0.0}'}


def test_mine_only_wrong_seed_rows():
    train, _ = examples()
    gen = generated([(r["id"], "#### -1", "") for r in train.to_pylist()])  # all wrong
    errors = mine_errors(train, grade(train, gen, TASK, "train"))
    assert errors.num_rows == 4  # the wrong synthetic row is never mined
    assert set(errors.column("origin").to_pylist()) == {"seed"}
    assert set(errors.column("trigger_prediction").to_pylist()) == {"#### -1"}


def test_candidates_are_deduplicated_and_decontaminated():
    train, test = examples()
    errors = mine_errors(train, grade(train, generated([]), TASK, "train"))
    req = teacher_requests(errors, TASK, n_per_error=2, round_=0,
                           sampling={"temperature": 0.7})
    assert req.num_rows == errors.num_rows
    first, second = errors.column("id").to_pylist()[:2]
    block = "Question: Zed has {} pens and buys 2. How many?\nAnswer: {} + 2 = {}\n#### {}"
    gen = generated([
        (f"{first}@r0", block.format(1, 1, 3, 3) + "\n" + block.format(1, 1, 3, 3), ""),  # dup
        (f"{second}@r0", f"Question: {test[0]['input']}\nAnswer: {test[0]['target']}",
         ""),  # a test row, worked answer and all
    ])
    cands = pa.Table.from_pylist(CandidateFilter(
        TASK, 0, "teacher-x", quota=2, known_inputs=[], protected=[test[0]["input"]],
        near_dup_threshold=0.6).add(errors, req, gen), schema=CANDIDATE)
    reasons = cands.column("reject_reason").to_pylist()
    assert reasons[0] == "" and reasons[1].startswith("duplicate")
    assert reasons[2].startswith("in_protected_set")
    assert all(r.startswith("teacher_error") for r in reasons[3:])  # no output for the rest
    added = accepted_examples(cands).to_pylist()
    assert len(added) == 1
    row = added[0]
    assert row["origin"] == "synthetic" and row["seed_id"] == first and row["round"] == 0
    assert row["teacher_model"] == "teacher-x" and row["prompt_hash"] == TASK.prompts.hash
    assert '"temperature": 0.7' in row["sampling"]


def test_a_teacher_that_writes_more_than_n_per_error_gets_no_more_rows_kept():
    train, _ = examples()
    errors = mine_errors(train, grade(train, generated([]), TASK, "train")).slice(0, 1)
    req = teacher_requests(errors, TASK, n_per_error=2, round_=0, sampling={})
    block = "Question: Zed has {0} pens. How many?\nAnswer: {0} + 0 = {0}\n#### {0}\n"
    gen = generated([(req["request_id"][0].as_py(), "".join(block.format(k) for k in (1, 2, 3)),
                      "")])
    cands = CandidateFilter(TASK, 0, "t", quota=2, known_inputs=[], protected=[],
                            near_dup_threshold=0.6).add(errors, req, gen)
    assert [c["accepted"] for c in cands] == [True, True, False]
    assert cands[2]["reject_reason"].startswith("over_n_per_error")


def test_a_unit_matching_another_units_rows_keeps_no_more_and_then_asks_nothing():
    """compare.match: rows: past max_rows a row is rejected as over_budget, and a filter that
    is full leaves no target short (so no top-up ask is sent)."""
    train, _ = examples()
    errors = mine_errors(train, grade(train, generated([]), TASK, "train")).slice(0, 2)
    req = teacher_requests(errors, TASK, n_per_error=2, round_=0, sampling={})
    block = "Question: {0} has {1} pens. How many?\nAnswer: {1} + 0 = {1}\n#### {1}\n"
    gen = generated([(rid, block.format(name, k) + block.format(name, k + 10), "")
                     for rid, name, k in zip(req["request_id"].to_pylist(), ["Zed", "Ula"],
                                             (1, 2))])
    filter_ = CandidateFilter(TASK, 0, "t", quota=2, known_inputs=[], protected=[],
                              near_dup_threshold=0.6, max_rows=3)
    cands = filter_.add(errors, req, gen)
    assert [c["accepted"] for c in cands] == [True, True, True, False]
    assert cands[3]["reject_reason"].startswith("over_budget: 3 rows kept")
    assert filter_.full() and filter_.short_of_quota() == set()
    nothing = CandidateFilter(TASK, 0, "t", quota=2, known_inputs=[], protected=[],
                              near_dup_threshold=0.6, max_rows=0)
    asked, _, _ = ask_teacher(errors, lambda r: generated([]), lambda rows, sample:
                              teacher_requests(rows, TASK, 2, 0, {}, sample=sample), nothing, 3)
    assert asked.num_rows == 0


def test_a_target_short_of_its_quota_is_asked_again_until_its_tries_run_out():
    train, _ = examples()
    errors = mine_errors(train, grade(train, generated([]), TASK, "train")).slice(0, 2)
    first, second = errors.column("id").to_pylist()
    block = "Question: {} has {} pens and buys {} more. How many?\nAnswer: {} + {} = {}\n#### {}\n"
    calls = []

    def teacher(req):  # `first` gets one good row per ask; `second` only junk
        calls.append(req)
        out = []
        for rid, sid, sample in zip(req["request_id"].to_pylist(), req["seed_id"].to_pylist(),
                                    req["sample"].to_pylist()):
            name = ["Ana", "Bo", "Cy"][sample]
            good = block.format(name, sample + 2, 5, sample + 2, 5, sample + 7, sample + 7)
            out.append((rid, good if sid == first else "no idea", ""))
        return generated(out)

    filter_ = CandidateFilter(TASK, 0, "t", quota=2, known_inputs=[], protected=[],
                              near_dup_threshold=0.6)
    requests, answers, cands = ask_teacher(
        errors, teacher,
        lambda rows, sample: teacher_requests(rows, TASK, 2, 0, {}, sample=sample),
        filter_, max_tries=3)
    # first: asked twice (two good rows make its quota); second: all three tries, no row
    assert [c.num_rows for c in calls] == [2, 2, 1]
    assert requests.column("request_id").to_pylist() == [
        f"{first}@r0", f"{second}@r0", f"{first}@r0~1", f"{second}@r0~1", f"{second}@r0~2"]
    kept = [c for c in cands.to_pylist() if c["accepted"]]
    assert [c["seed_id"] for c in kept] == [first, first]


def test_the_answer_check_rejects_a_row_whose_answer_the_teacher_does_not_reproduce():
    """Self-consistency: a plausible question with a wrong answer passes every other gate; it
    is rejected when solving it again gives another answer, before the quota is filled, so a
    confirmed row behind it still counts."""
    train, _ = examples()
    errors = mine_errors(train, grade(train, generated([]), TASK, "train")).slice(0, 1)
    req = teacher_requests(errors, TASK, n_per_error=2, round_=0, sampling={})
    blocks = ["Question: Zed has 4 boxes with 4 pens in each box and 16 more pens. How many "
              "pens does Zed have?\nAnswer: 4 * 4 = 16 and 16 * 4 = 64\n#### 64\n",
              "Question: Ana has 3 pens and buys 5 more. How many pens does Ana have?\n"
              "Answer: 3 + 5 = 8\n#### 8\n",
              "Question: Bo has 9 cups and gives away 2. How many cups are left?\n"
              "Answer: 9 - 2 = 7\n#### 7\n",
              "Question: Cy has 45 cups and gives away 17. How many cups are left?\n"
              "Answer: 45 - 17 = 28\n#### 28\n"]
    gen = generated([(req["request_id"][0].as_py(), "".join(blocks), "")])
    # Cy: the same step with a wrong sum; the check reads it through the calculator too
    solved = {"Zed": "16 + 16 = 32\n#### 32", "Ana": "#### 8", "Bo": "#### 7",
              "Cy": "45 - 17 = 38 cups.\n#### 38"}
    checked = []

    def solve(requests):  # the teacher answering as the student is asked, greedily
        checked.append(requests)
        out = []
        for rid, messages in zip(requests["request_id"].to_pylist(),
                                 requests["messages"].to_pylist()):
            question = json.loads(messages)[-1]["content"]
            out.append((rid, next(v for k, v in solved.items() if k in question), ""))
        return generated(out)

    check = AnswerCheck(TASK, solve, {"temperature": 0.7, "max_tokens": 64})
    cands = CandidateFilter(TASK, 0, "t", quota=3, known_inputs=[], protected=[],
                            near_dup_threshold=0.6, check=check).add(errors, req, gen)
    assert [c["accepted"] for c in cands] == [False, True, True, True]
    assert cands[0]["reject_reason"] == "unconfirmed: solved again, the teacher answers '32', " \
                                        "not '64'"
    assert json.loads(checked[0]["sampling"][0].as_py())["temperature"] == 0.0  # greedy
    assert "Solve the math word problem" in checked[0]["messages"][0].as_py()  # as the student
    assert check.generated and check.requests[0].num_rows == 4
