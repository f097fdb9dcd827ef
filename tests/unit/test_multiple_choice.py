"""The multiple_choice task type on hand-made rows (CaseHOLD's shape: a context, 5 holdings)."""

import json
import re

import pytest

from engine.config import TaskConfig
from engine.errors import DataError
from engine.tasks import build_task

HOLDINGS = ["holding that the statute of limitations had run",
            "holding that the contract was void for lack of consideration",
            "holding that the search violated the Fourth Amendment",
            "holding that the agency exceeded its authority",
            "holding that the plaintiff lacked standing to sue"]


def mc_task(tmp_path, label_of=lambda k: k % 5, n=6):
    path = tmp_path / "mc.jsonl"
    rows = [{"context": f"The court considered case {k} on appeal and ruled (<HOLDING>).",
             "endings": HOLDINGS[k % 5:] + HOLDINGS[: k % 5], "label": label_of(k)}
            for k in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return build_task(TaskConfig(name="casehold", type="multiple_choice",
                                 description="Pick the holding the citation supports.",
                                 fields={"context": "context", "choices": "endings",
                                         "label": "label"},
                                 n_seed=3, n_test=None,
                                 data={"train": str(path), "test": str(path)}), 0)


@pytest.mark.parametrize("label_of", [lambda k: k % 5, lambda k: "ABCDE"[k % 5],
                                      lambda k: HOLDINGS[(k % 5 + k % 5) % 5]])
def test_items_show_lettered_choices_and_take_index_letter_or_text_labels(tmp_path, label_of):
    task = mc_task(tmp_path, label_of)
    seed, test = task.seed_and_test()
    row = seed[0]
    lines = row["input"].split("\n")
    assert lines[0].startswith("The court considered case") and len(lines) == 6
    assert [line[:3] for line in lines[1:]] == ["A. ", "B. ", "C. ", "D. ", "E. "]
    assert row["label"] in "ABCDE" and row["target"] == row["label"]
    k = int(lines[0].split()[4])
    chosen = lines[1 + "ABCDE".index(row["label"])][3:]
    choices = HOLDINGS[k % 5:] + HOLDINGS[: k % 5]
    want = label_of(k)
    assert chosen == (want if len(str(want)) > 1 else choices[k % 5])


def test_student_grading_reads_the_first_letter(tmp_path):
    task = mc_task(tmp_path)
    assert task.grade("B", "B") == ("B", True)
    assert task.grade("(C) because the agency ...", "B") == ("C", False)
    assert task.grade("Answer: D.", "D") == ("D", True)
    assert task.grade("none of them", "A") == ("", False)
    prompt = task.student_messages(task.seed_and_test()[0][0]["input"])[0]["content"]
    assert "letter of the correct choice" in prompt and prompt.endswith("Answer:")


def test_teacher_items_need_every_choice_distinct_and_an_answer_in_range(tmp_path):
    task = mc_task(tmp_path)
    seed, _ = task.seed_and_test()
    ask = task.teacher_messages(seed[0], "A", 2)[-1]["content"]
    assert seed[0]["input"] in ask and "5 choices lettered A to E" in ask
    choices = "\n".join(f"{x}. {h}" for x, h in zip("ABCDE", HOLDINGS))
    out = task.parse_teacher(
        f"Context: The court reviewed the lower court's dismissal (<HOLDING>).\n{choices}\n"
        f"Answer: C\n"
        f"Context: Another appeal about a lease dispute (<HOLDING>).\n"
        f"A. one\nB. two\nC. three\nAnswer: A\n"
        f"Context: A third appeal about standing to sue (<HOLDING>).\n{choices}\nAnswer: G\n"
        f"Context: A fourth appeal about a contract (<HOLDING>).\n"
        + "\n".join(f"{x}. {HOLDINGS[0]}" for x in "ABCDE") + "\nAnswer: B\n", seed[0])
    assert out[0].label == "C" and not out[0].reject_reason
    assert out[0].input.split("\n")[3] == f"C. {HOLDINGS[2]}"
    assert out[1].reject_reason.startswith("unparsed: 3 choices")
    assert out[2].reject_reason == "unparsed: no answer letter A-E"
    assert out[3].reject_reason == "unverified: two choices are the same"
    assert re.fullmatch(task.teacher_format_regex(seed[0], 1),
                        f"Context: The court reviewed the dismissal.\n{choices}\nAnswer: C\n")


def test_a_label_that_is_no_choice_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="neither an index, a letter nor the text"):
        mc_task(tmp_path, lambda k: "holding that nothing happened").seed_and_test()
