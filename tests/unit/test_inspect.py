"""`llm2llm inspect` on a hand-made run directory: errors, the teacher's rows for each with
verdicts, and which errors the next round fixed."""

import pyarrow as pa
import pytest
import yaml

from engine.cli import main
from engine.errors import DataError
from engine.inspect import inspect_run, round_rows
from engine.records import CANDIDATE, EXAMPLE, PREDICTION
from engine.storage import RunStorage


def example(rid, text, label, **extra):
    return {"id": rid, "task": "qa", "input": text, "target": label, "label": label,
            "origin": "seed", "round": -1, "seed_id": rid, "trigger_prediction": "",
            "teacher_model": "", "prompt_hash": "", "sampling": "{}", **extra}


def candidate(cid, target, text, label, accepted, reason=""):
    return example(cid, text, label, origin="synthetic", round=0, seed_id=target,
                   trigger_prediction="LOC", accepted=accepted, reject_reason=reason)


def prediction(rid, correct):
    return {"id": rid, "task": "qa", "split": "train", "origin": "seed", "output": "",
            "extracted": "", "correct": correct, "completion_tokens": 1, "error": ""}


def put(store, key, r, stage, rows, schema):
    stage_dir = store.stage_dir(key, r, stage)
    store.write_table(stage_dir, pa.Table.from_pylist(rows, schema=schema))
    store.finish_stage(stage_dir, stage)


@pytest.fixture
def run_dir(tmp_path):
    """Round 0 of task `qa`: two errors (e1, e2) mined from three seed rows, a random target
    s3 that was not an error; round 1 predicted e1 right and e2 still wrong."""
    store = RunStorage(tmp_path)
    store.write_text(store.path("config.yaml"), yaml.safe_dump(
        {"config": {"rounds": 3, "tasks": [{"name": "qa"}], "strategy": {"name": "llm2llm"}}}))
    seed = [example("e1", "How far is Paris ?", "NUM"), example("e2", "Who wrote Emma ?", "HUM"),
            example("s3", "What is a dog ?", "DESC")]
    put(store, "qa", 0, "data", seed, EXAMPLE)
    put(store, "qa", 0, "mine", [dict(seed[0], trigger_prediction="LOC"),
                                  dict(seed[1], trigger_prediction="ENTY")], EXAMPLE)
    put(store, "qa", 0, "augment", [
        candidate("e1@r0#0", "e1", "How far is Rome ?", "NUM", True),
        candidate("e1@r0#1", "e1", "NUM NUM NUM", "NUM", False, "label_names: mostly label names"),
        candidate("e2@r0#0", "e2", "Who wrote Emma ?", "HUM", False, "duplicate: near copy of x"),
        candidate("s3@r0#0", "s3", "What is a cat ?", "DESC", True)], CANDIDATE)
    put(store, "qa", 1, "predict", [prediction("e1", True), prediction("e2", False),
                                     prediction("s3", True)], PREDICTION)
    return str(tmp_path)


def test_each_target_carries_its_rows_verdicts_and_whether_it_was_fixed(run_dir):
    rows = {r["id"]: r for r in round_rows(RunStorage(run_dir), "qa", 0)}
    assert rows["e1"]["right_next_round"] is True and rows["e2"]["right_next_round"] is False
    assert rows["e1"]["student_output"] == "LOC" and rows["e1"]["mined"]
    assert [(c["accepted"], c["reject_reason"][:10]) for c in rows["e1"]["candidates"]] == [
        (True, ""), (False, "label_name")]
    # a target that was not an error (random, mixed) is shown with its seed row's text
    assert not rows["s3"]["mined"] and rows["s3"]["input"] == "What is a dog ?"
    assert round_rows(RunStorage(run_dir), "qa", 1) is None  # round 1 not mined yet


def test_summary_round_detail_and_one_row(run_dir, capsys):
    summary = inspect_run(run_dir)
    assert "qa r0: errors 2, fixed next round 1, asked about 3, wrote 4, accepted 2" in summary
    assert "rejected label_names 1, duplicate 1" in summary
    detail = inspect_run(run_dir, round_=0)
    assert "error e2  label HUM  student said 'ENTY'  still wrong" in detail
    assert "- HUM: Who wrote Emma ?  [duplicate: near copy of x]" in detail
    assert "target (not an error) s3" in detail
    assert main(["inspect", run_dir, "--row", "e1"]) == 0
    one = capsys.readouterr().out
    assert "next round:     right" in one and "label NUM: NUM NUM NUM" in one


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "other"}, "no such unit in this run; it has qa"),
    ({"round_": 5}, "this run has rounds 0 to 2"),
    ({"row_id": "zz"}, "not a row the teacher was asked about"),
])
def test_bad_arguments_name_what_exists(run_dir, kwargs, message):
    with pytest.raises(DataError, match=message):
        inspect_run(run_dir, **kwargs)


def test_a_folder_that_is_not_a_run_is_named(tmp_path):
    with pytest.raises(DataError, match="not a run directory"):
        inspect_run(str(tmp_path))


def test_escape_sequences_a_teacher_wrote_are_shown_not_sent_to_the_terminal(run_dir):
    """Issue 30: clear screen, set title, an OSC 8 link and an OSC 52 clipboard write in a
    teacher's row reach the output as visible escapes; newlines and tabs stay."""
    store = RunStorage(run_dir)
    nasty = ("\x1b[2J\x1b]0;pwned\x07 How far \x1b]8;;http://x\x1b\\is\x1b]8;;\x1b\\ Rome "
             "\x1b]52;c;ZWNobyBoaQ==\x07?\x9b31m")
    put(store, "qa", 0, "augment", [candidate("e1@r0#0", "e1", nasty, "NUM", True)], CANDIDATE)
    for out in (inspect_run(run_dir, round_=0), inspect_run(run_dir, row_id="e1")):
        assert not any(ch in out for ch in "\x1b\x07\x9b")
        assert "\\x1b[2J" in out and "\\x1b]52;c;ZWNobyBoaQ==\\x07" in out and "\\x9b31m" in out
        assert "\n" in out
