import json
import re
from pathlib import Path

import pytest

from engine.config import TaskConfig
from engine.errors import DataError
from engine.tasks import build_task, check_tasks
from engine.tasks.arithmetic import generate
from engine.tasks.math import extract_answer


def test_extract_answer_prefers_final_marker():
    assert extract_answer("3 + 4 = 7\n#### 1,200") == "1200"
    assert extract_answer("so the answer is 12.") == "12"
    assert extract_answer("#### $5.50") == "5.5"
    assert extract_answer("no digits here") == ""


def test_math_grading_and_gsm8k_calc_annotations_stripped(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": "2*3 = <<2*3=6>>6\n#### 6"}) + "\n")
    task = build_task(TaskConfig(name="gsm8k", data={"train": str(path),
                                                     "test": str(tmp_path / "test.jsonl")}), 0)
    (tmp_path / "test.jsonl").write_text(path.read_text())
    seed, test = task.seed_and_test()
    assert seed[0]["target"] == "2*3 = 6\n#### 6"
    assert seed[0]["label"] == "6"
    assert task.grade("it is 6\n#### 6", "6") == ("6", True)
    assert task.grade("#### 7", "6") == ("7", False)


def test_math_teacher_parser_accepts_blocks_and_rejects_malformed():
    task = build_task(TaskConfig(name="arithmetic"), 0)
    out = ("Question: Ann has 2 cats and gets 3 more. How many?\nAnswer: 2 + 3 = 5\n#### 5\n\n"
           "Question: Bob has 4 pens.\nAnswer: he has 4 pens, no final line\n"
           "Question 3: Cy buys 2 bags of 5. How many?\nAnswer: 2 * 5 = 10\n#### 10\nThanks!")
    parsed = task.parse_teacher(out, {"label": "1"})
    assert [p.label for p in parsed] == ["5", "", "10"]
    assert parsed[1].reject_reason.startswith("unparsed")
    assert parsed[2].target.endswith("#### 10")  # chatter after the answer dropped
    assert task.parse_teacher("I cannot help", {})[0].reject_reason.startswith("unparsed")


def test_arithmetic_is_deterministic_and_seed_dependent():
    assert generate(20, seed=3) == generate(20, seed=3)
    assert generate(20, seed=3) != generate(20, seed=4)
    for row in generate(50, seed=1):  # every generated answer is arithmetically right
        assert extract_answer(row["answer"]) == row["answer"].rsplit("#### ", 1)[1]


def test_arithmetic_seed_and_test_sizes():
    task = build_task(TaskConfig(name="arithmetic", n_seed=7, n_test=5), 0)
    seed, test = task.seed_and_test()
    assert len(seed) == 7 and len(test) == 5
    assert {r["origin"] for r in seed} == {"seed"}
    assert seed[0]["id"].startswith("arithmetic:train:")


def yaml_task(tmp_path, **extra):
    train = tmp_path / "t.jsonl"
    train.write_text("\n".join(json.dumps({"body": f"text {i}", "y": i % 2}) for i in range(10)))
    fields = dict(name="spam", type="classification", labels=["ham", "spam"],
                  label_names={"0": "ham", "1": "spam"}, fields={"text": "body", "label": "y"},
                  data={"train": str(train), "test": str(train)}, n_seed=4)
    fields.update(extra)
    return TaskConfig(**fields)


def test_classification_task_defined_in_config_alone(tmp_path):
    task = build_task(yaml_task(tmp_path), 0)
    seed, _ = task.seed_and_test()
    assert len(seed) == 4 and {r["label"] for r in seed} <= {"ham", "spam"}
    assert task.grade("Label: spam.", "spam") == ("spam", True)
    assert task.grade("I think HAM", "spam") == ("ham", False)
    content = task.student_messages("buy now")[0]["content"]
    assert "ham, spam" in content and "buy now" in content


def test_classification_teacher_parser_checks_label(tmp_path):
    task = build_task(yaml_task(tmp_path), 0)
    out = ("Text: win a prize now\nLabel: spam\n\nText: lunch at noon?\nLabel: ham\n"
           "Text: cheap pills for you\nThe correct label is: spam\nText: hi\nLabel: spam")
    parsed = task.parse_teacher(out, {"label": "spam"})
    assert [(p.input, p.reject_reason) for p in parsed] == [
        ("win a prize now", ""), ("lunch at noon?", "label_mismatch"),
        ("cheap pills for you", ""),  # only the first line: the rest echoes the prompt
        ("hi", "unparsed: text missing or too short")]
    echoes = task.parse_teacher("Text: The correct label is spam, not ham.\n"
                                "Text: Text: spam again today\n", {"label": "spam"})
    assert [p.reject_reason for p in echoes] == ["prompt_echo", "prompt_echo"]
    # a wrapper inside the asked-for one, and quotes, are not part of the example
    inner = task.parse_teacher('Text: Sentence: "An object lesson in period filmmaking\n'
                               'Label: spam\nText: Review 2: \u201cwin a free cruise today\u201d\n'
                               'Label: spam', {"label": "spam"})
    assert [(p.input, p.reject_reason) for p in inner] == [
        ("An object lesson in period filmmaking", ""), ("win a free cruise today", "")]


def test_unknown_label_in_data_is_a_data_error(tmp_path):
    task = build_task(yaml_task(tmp_path, label_names={"0": "ham"}), 0)
    with pytest.raises(DataError, match="label '1' is not one of"):
        task.seed_and_test()


def test_check_tasks_reports_unknown_task_and_missing_files(tmp_path):
    problems = check_tasks([TaskConfig(name="nosuch"),
                            TaskConfig(name="gsm8k", data={"train": str(tmp_path / "x.jsonl")})], 0)
    assert any("tasks.nosuch: unknown task" in p for p in problems)
    assert any("x.jsonl' does not exist" in p for p in problems)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a", "answer": "#### 1"}\n{"question": oops}\n')
    task = build_task(TaskConfig(name="gsm8k", data={"train": str(path), "test": str(path)}), 0)
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        task.seed_and_test()


def test_missing_field_mapping_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"q": "a", "answer": "#### 1"}) + "\n")
    task = build_task(TaskConfig(name="gsm8k", data={"train": str(path), "test": str(path)}), 0)
    with pytest.raises(DataError, match="no field 'question'"):
        task.seed_and_test()


def test_prompt_hash_changes_with_content(tmp_path):
    a = build_task(TaskConfig(name="arithmetic"), 0).prompts
    custom = tmp_path / "p.yaml"
    custom.write_text(open(a.path).read() + "\n# edited\n")
    b = build_task(TaskConfig(name="arithmetic", prompts=str(custom)), 0).prompts
    assert a.hash != b.hash and len(a.hash) == 12


def test_teacher_format_regex_matches_what_the_parser_accepts(tmp_path):
    import re

    math = build_task(TaskConfig(name="arithmetic"), 0)
    out = ("Question: Ann has 2 cats and gets 3 more.\nAnswer: 2 + 3 = 5 cats.\n#### 5\n"
           "Question: Bo has 4 pens and loses 1.\nAnswer: 4 - 1 = 3 pens.\n#### 3\n")
    assert re.fullmatch(math.teacher_format_regex({}, 2), out)
    assert [p.label for p in math.parse_teacher(out, {})] == ["5", "3"]
    assert not re.fullmatch(math.teacher_format_regex({}, 3), out)  # asks for exactly n
    steps = ("Question: Ann has 2 bags of 3 and 4 more.\nAnswer: 2 * 3 = 6.\n"
             "Then 6 + 4 = 10.\n#### 10\n")
    assert re.fullmatch(math.teacher_format_regex({}, 1), steps)  # a worked answer's lines

    cls = build_task(yaml_task(tmp_path), 0)
    out = "Text: win a free cruise today\nLabel: spam\n"
    assert re.fullmatch(cls.teacher_format_regex({"label": "spam"}, 1), out)
    assert not re.fullmatch(cls.teacher_format_regex({"label": "ham"}, 1), out)
    assert not re.fullmatch(cls.teacher_format_regex({"label": "spam"}, 1), "Text: hi\nLabel: spam\n")
    assert cls.parse_teacher(out, {"label": "spam"})[0].reject_reason == ""


def test_math_verifier_rejects_wrong_arithmetic_and_mismatched_final():
    from engine.tasks.math import check_arithmetic

    assert check_arithmetic("2 + 3 = 5 cats, then 5 * 2 = 10.\n#### 10", "10") == ""
    assert check_arithmetic("He has 16 - 47 = 22 apples.\n#### 47", "47").startswith(
        "wrong arithmetic: 16 - 47 = 22")
    # chains are evaluated whole, with precedence; 'x' is multiplication between numbers
    assert check_arithmetic("Needs 100 - 50 - 30 - 15 = $5 more.\n#### 5", "5") == ""
    assert check_arithmetic("Earned $60 because 4 x 15 = 60\n#### 60", "60") == ""
    assert check_arithmetic("25/100 * 28 = 7 green, 2 + 3 * 4 = 14\n#### 14", "14") == ""
    assert check_arithmetic("$1,200 / 4 = $300\n#### 300", "300") == ""
    assert "does not appear" in check_arithmetic("2 + 3 = 5\n#### 6", "6")
    assert check_arithmetic("Four boxes of 1 make 4.\n#### 4", "4") == ""  # nothing to check
    assert check_arithmetic("284 + 2 = 285\n#### 285", "285")  # whole numbers: exactly
    assert check_arithmetic("10 / 3 = 3.33\n#### 3.33", "3.33") == ""  # a rounded fraction
    task = build_task(TaskConfig(name="arithmetic"), 0)
    # a wrong value the question also states: which one a later step means is unknown
    parsed = task.parse_teacher("Question: Ann has 2 bags of 2, and 5 more?\n"
                                "Answer: 2 * 2 = 5, 5 + 5 = 10\n#### 10", {})
    assert parsed[0].reject_reason.startswith("unverified: wrong arithmetic: 2 * 2 = 5")
    for row in generate(200, seed=7):  # the built-in generator's answers all verify
        assert check_arithmetic(row["answer"], extract_answer(row["answer"])) == "", row


def test_teacher_answers_in_other_wrappers_are_read_leniently(tmp_path):
    task = build_task(yaml_task(tmp_path), 0)
    out = ("Sure! Here are two examples.\nThe text: In an address on Monday the minister "
           "announced cheap loans for all\nLabel: spam\n**Example 2:** Claim your free prize "
           "now by replying YES")
    parsed = task.parse_teacher(out, {"label": "spam"})
    assert [(p.input, p.reject_reason) for p in parsed] == [
        ("In an address on Monday the minister announced cheap loans for all", ""),
        ("Claim your free prize now by replying YES", "")]
    listed = task.parse_teacher("1. Win a brand new car today\n2) Cheap watches for sale here",
                                {"label": "spam"})
    assert [p.input for p in listed] == ["Win a brand new car today",
                                         "Cheap watches for sale here"]
    nothing = task.parse_teacher("I am not able to write that.", {"label": "spam"})
    assert nothing[0].reject_reason.startswith("unparsed")
    assert nothing[0].input == "I am not able to write that."  # kept for inspection
    math = build_task(TaskConfig(name="arithmetic", n_seed=2, n_test=2), 0)
    (p,) = math.parse_teacher("Problem 1: Ann has 2 cats and gets 3 more. How many?\n"
                              "Solution: 2 + 3 = 5\n#### 5", {})
    assert (p.input, p.label, p.reject_reason) == (
        "Ann has 2 cats and gets 3 more. How many?", "5", "")


def test_classification_rejects_label_codes_and_talk_about_examples(tmp_path):
    task = build_task(yaml_task(tmp_path, labels=["HAM", "SPAM"],
                                label_names={"0": "HAM", "1": "SPAM"}), 0)
    out = ("Text: The correct answer is SPAM\nText: A company 's logo is a SPAM .\n"
           "Text: This is a similar example.\nText: 1. Win a free cruise by calling today")
    parsed = task.parse_teacher(out, {"label": "SPAM"})
    assert [p.reject_reason.split(":")[0] for p in parsed] == [
        "prompt_echo", "label_names", "prompt_echo", ""]
    assert parsed[3].input == "Win a free cruise by calling today"


def test_math_rows_must_be_about_their_own_numbers():
    from engine.tasks.math import check_grounding

    q = "Chris has 10 boxes with 15 toys in each. He gives away 2 toys. How many are left?"
    assert check_grounding(q, "10 * 15 = 150\n#### 150") == (
        "ungrounded: the question's 2 is never used")
    assert check_grounding(q, "10 * 15 = 150 toys. 150 - 2 = 148\n#### 148") == ""
    assert check_grounding(q, "10 * 37 = 370\n#### 370").startswith("ungrounded: 37 is not")
    assert check_grounding("Ann has 3 pens and buys twice as many. How many now?",
                           "3 * 2 = 6. 3 + 6 = 9\n#### 9") == ""  # 2: a free constant
    # an answer that only asserts its result (rows the bundled teacher wrote in the demo)
    assert check_grounding("How many cans of soda can be used to make 230 cans of soda?",
                           "There are 21 cans of soda left.\n#### 21") == (
        "ungrounded: the final answer 21 is not the result of a calculation")
    assert check_grounding("Ben has 3 cats and 4 dogs. How many pets?",
                           "3 + 4 = 7 pets. The answer is 8.\n#### 8").startswith(
        "ungrounded: the final answer 8")


RTE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "rte"


def rte_task():
    if not RTE.is_dir():
        pytest.skip(f"real RTE data not found at {RTE}")
    return build_task(TaskConfig(
        name="rte", fields={"text": "premise", "text_b": "hypothesis", "label": "label"},
        data={"train": str(RTE / "train.jsonl"), "test": str(RTE / "validation.jsonl")},
        n_seed=4, n_test=3), 0)


def test_a_pair_task_shows_both_texts_to_student_and_teacher():
    task = rte_task()
    assert task.prompts.path.endswith("llm2llm/pair.yaml")
    assert task.s3_prompts.path.endswith("s3/pair.yaml")
    seed, _ = task.seed_and_test()
    premise, hypothesis = seed[0]["input"].split("\n")
    assert premise.startswith("Premise: ") and hypothesis.startswith("Hypothesis: ")
    assert seed[0]["label"] in ("entailment", "not_entailment")
    student = task.student_messages(seed[0]["input"])[0]["content"]
    assert seed[0]["input"] in student and student.endswith("Label:")
    ask = task.teacher_messages(seed[0], "entailment", 2, seed[1:])[-1]["content"]
    assert seed[0]["input"] in ask and '"Premise: ...", then "Hypothesis: ..."' in ask
    extrapolate = task.teacher_messages({**seed[0], "origin": "validation"}, "x", 2,
                                        prompts=task.s3_prompts)
    assert "got this pair wrong" in extrapolate[-1]["content"]


def test_pair_parser_reads_both_texts_and_checks_each():
    task = rte_task()
    row = {"label": "entailment"}
    out = task.parse_teacher(
        "Premise: The council approved the new park budget on Monday.\n"
        "Hypothesis: A park budget was approved.\nLabel: entailment\n"
        "2. **Premise:** Rain fell across the valley all night long.\n"
        "**Hypothesis:** The valley stayed dry.\nLabel: not_entailment\n"
        "Premise: Only a premise here without its partner line\nLabel: entailment\n"
        "Premise: The museum opened a new wing last spring.\nHypothesis: Opened.\n", row)
    assert out[0].input == ("Premise: The council approved the new park budget on Monday.\n"
                            "Hypothesis: A park budget was approved.") and not out[0].reject_reason
    assert out[1].reject_reason == "label_mismatch"
    assert out[2].reject_reason == "unparsed: no 'Hypothesis:' line"
    assert out[3].reject_reason == "unparsed: text missing or too short"
    regex = task.teacher_format_regex(row, 1)
    assert re.fullmatch(regex, "Premise: The council approved the park budget.\n"
                               "Hypothesis: A budget was approved.\nLabel: entailment\n")


def test_multiline_texts_keep_every_line_up_to_the_label(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "a fine film overall", "label": "pos"}) + "\n")
    answer = ("Text: The film opens slowly.\nBy the end I was in tears, in a good way.\n"
              "Label: pos\n")
    for multiline, want in ((True, "The film opens slowly. By the end I was in tears, in a "
                                   "good way."), (False, "The film opens slowly.")):
        task = build_task(TaskConfig(name="r", type="classification", labels=["pos", "neg"],
                                     fields={"text": "text", "label": "label"},
                                     multiline=multiline,
                                     data={"train": str(path), "test": str(path)}), 0)
        assert task.parse_teacher(answer, {"label": "pos"})[0].input == want


def test_one_labelled_split_is_cut_into_disjoint_seed_and_test(tmp_path):
    path = tmp_path / "all.jsonl"
    path.write_text("".join(json.dumps({"question": f"Q{k}?", "answer": f"#### {k}"}) + "\n"
                            for k in range(10)))
    task = build_task(TaskConfig(name="gsm8k", n_seed=3, n_test=None, n_validation=2,
                                 data={"train": str(path), "test": str(path)}), 0)
    seed, test, validation, _ = task.splits()
    assert len(seed) == 3 and len(validation) == 2 and len(test) == 5
    assert task.seed_and_test() == (seed, test)  # the same test rows, validation or not
    inputs = [r["input"] for r in seed + validation + test]
    assert len(set(inputs)) == 10


def test_math_teacher_is_shown_a_worked_request_built_from_the_nearest_seed_rows():
    task = build_task(TaskConfig(name="arithmetic", n_seed=40, n_test=5), 0)
    seed, _ = task.seed_and_test()
    row = seed[0]
    demos = task.demonstrations(row, seed, 3)
    assert row not in demos and len(demos) == 3
    overlap = lambda r: len(set(row["input"].lower().split()) & set(r["input"].lower().split()))  # noqa
    assert overlap(demos[0]) >= max(overlap(r) for r in seed[1:])  # the nearest first
    messages = task.teacher_messages(row, "7", 2, demos)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert demos[0]["input"] in messages[1]["content"]
    assert all(f"Question: {d['input']}\nAnswer: {d['target']}" in messages[2]["content"]
               for d in demos[1:3])
    assert row["input"] in messages[3]["content"]
    parsed = task.parse_teacher(messages[2]["content"], row)  # the worked answer parses
    assert len(parsed) == 2 and not any(p.reject_reason for p in parsed)
    fixed = task.teacher_messages(row, "7", 2, [])  # no seed rows: the file's one-shot
    assert "Mia has 5 bags" in fixed[2]["content"]


@pytest.mark.parametrize("s3", [False, True])
def test_a_real_row_the_student_got_wrong_is_asked_about_after_a_worked_request(s3):
    """Whether mined from the seed or the validation rows: the strategy picks the prompt file
    (llm2llm's, or s3's error extrapolation) and both show a worked request about another real
    row of the label, answered with real rows, before the row itself."""
    task = rte_task()
    task.cfg = task.cfg.model_copy(update={"n_seed": 20, "n_validation": 2})
    seed, _, validation, _ = task.splits()
    row = validation[0]
    assert row["origin"] == "validation"
    demos = task.demonstrations(row, seed, 3)
    assert demos and all(d["label"] == row["label"] for d in demos)
    messages = task.teacher_messages(row, "x", 2, demos, task.s3_prompts if s3 else None)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    wording = "got this pair wrong" if s3 else "The student was given the following pair"
    assert wording in messages[1]["content"] and wording in messages[3]["content"]
    assert demos[0]["input"] in messages[1]["content"] and row["input"] in messages[3]["content"]
    assert row["input"] not in messages[2]["content"]
    parsed = task.parse_teacher(messages[2]["content"], row)  # the worked answer parses
    assert [p.input for p in parsed] == [d["input"] for d in demos[1:3]]
    assert not any(p.reject_reason for p in parsed)


def test_a_worked_answer_is_recomputed_as_a_calculator_would_and_its_later_uses_follow():
    from engine.tasks.math import recompute_steps

    question = "Sam has 25 pens and buys 15 more. He shares them among 8 friends. Each gets?"
    wrong = "25 + 15 = 45 pens. 45 / 8 = 5 each, so each gets 5.\n#### 5"
    assert recompute_steps(question, wrong) == (
        "25 + 15 = 40 pens. 40 / 8 = 5 each, so each gets 5.\n#### 5")
    # a comma then a space ends a clause; a thousands comma does not
    assert recompute_steps("38 and 15, then double", "38 - 15 = 25, 25 * 2 = 50\n#### 50") == (
        "38 - 15 = 23, 23 * 2 = 46\n#### 46")
    # a chain's inner values are not steps; a unit written on is not checked
    assert recompute_steps("3, 2 and 10", "3 + 2 * 10 = 3 + 20 = 25 tacos\n#### 25") == (
        "3 + 2 * 10 = 3 + 20 = 23 tacos\n#### 23")
    assert recompute_steps("7 and 10 more", "10 pts + 7 = 27pts, 20 pts\n#### 27") == (
        "10 pts + 7 = 27pts, 20 pts\n#### 27")
    assert recompute_steps("5 of 3 of 1,000", "5 * 3 = 16, 16 * 1,000 = 16,000\n#### 16,000") \
        == "5 * 3 = 15, 15 * 1,000 = 15000\n#### 15000"
    # left for the checks to reject: not a whole number; a wrong value the question states,
    # or a small one (it may be a count the answer uses elsewhere)
    assert recompute_steps("10 among 3", "10 / 3 = 3\n#### 3") == "10 / 3 = 3\n#### 3"
    assert recompute_steps("9 and 4", "9 - 4 = 6, for 6 days\n#### 6") == (
        "9 - 4 = 6, for 6 days\n#### 6")
    assert recompute_steps("10 pts, 14 and 6", "10 pts + 14 + 6 = 30\n#### 30") == (
        "10 pts + 14 + 6 = 30\n#### 30")  # began before a word: unchecked, not misread
    assert recompute_steps("2 bags of 2, 5 more", "2 * 2 = 5, 5 + 5 = 10\n#### 10") == (
        "2 * 2 = 5, 5 + 5 = 10\n#### 10")
    task = build_task(TaskConfig(name="arithmetic"), 0)
    parsed = task.parse_teacher(f"Question: {question}\nAnswer: {wrong}", {})
    assert parsed[0].reject_reason == "" and parsed[0].label == "5"
    assert parsed[0].target.startswith("25 + 15 = 40 pens. 40 / 8 = 5 each")


def test_a_classification_round_reports_its_test_answers_label_mix(tmp_path):
    import pyarrow as pa

    from engine.metrics import NO_ANSWER
    from engine.records import PREDICTION

    task = build_task(yaml_task(tmp_path), 0)
    outputs = [("test", "spam"), ("test", "Spam, surely"), ("test", "ham"), ("test", "no idea"),
               ("train", "ham"), ("train", "ham")]
    rows = []
    for i, (split, output) in enumerate(outputs):
        extracted, correct = task.grade(output, "spam")
        rows.append(dict(id=str(i), task="spam", split=split, origin="seed", output=output,
                         extracted=extracted, correct=correct, completion_tokens=1, error=""))
    scores = task.round_scores(pa.Table.from_pylist(rows, schema=PREDICTION))
    # the mining rows (split "train") are not counted; an output naming no label is
    assert scores == {"test_answers": {NO_ANSWER: 1, "ham": 1, "spam": 2},
                      "test_top_answer_share": 0.5}


def test_the_builtin_reviews_are_distinct_deterministic_and_carved_without_overlap():
    from engine.tasks.reviews import ReviewsTask, generate

    rows = generate(500, 3)
    assert rows == generate(500, 3) and rows != generate(500, 4)
    assert len({r["text"] for r in rows}) == 500 and {r["label"] for r in rows} == {
        "negative", "positive"}
    # most reviews are not read off one word: negations, contrasts, expectations
    assert any(" not " in r["text"] for r in rows) and any(", but " in r["text"] for r in rows)
    task = build_task(TaskConfig(name="reviews", n_seed=16, n_validation=100, n_test=400), 0)
    assert isinstance(task, ReviewsTask) and task.check() == []
    seed, test, validation, _ = task.splits()
    assert (len(seed), len(validation), len(test)) == (16, 100, 400)
    texts = [{r["input"] for r in part} for part in (seed, validation, test)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert task.grade("positive", "positive") == ("positive", True)
    # the preset alone is the few-row setting the task is for, not half the pool as seed
    assert [len(part) for part in build_task(TaskConfig(name="reviews"), 0).splits()] == \
        [16, 400, 100, 0]


def test_a_reviews_task_that_sets_labels_fields_or_files_is_refused_when_checked():
    problems = build_task(TaskConfig(name="reviews", labels=["neg", "pos"],
                                     fields={"text": "sentence", "label": "label"},
                                     data={"train": "mine.jsonl"}), 0).check()
    assert [p.split(":")[0] for p in problems] == [
        "tasks.reviews.labels", "tasks.reviews.fields", "tasks.reviews.data"]
    assert "use type: classification to read your own" in problems[2]


def test_an_encoder_student_takes_the_builtin_reviews_but_not_arithmetic():
    from engine.config import load_config
    from engine.job import _check_student_kind

    def problems(task):
        return _check_student_kind(load_config(None, [f"tasks=[{{name: {task}}}]",
                                                      "student.kind=sequence_classification"]))
    assert problems("reviews") == []
    assert "type arithmetic needs a generating student" in problems("arithmetic")[0]
