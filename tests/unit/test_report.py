"""`llm2llm report` on a hand-made compare directory: the summary, one SVG per plot, and the
teacher's rows escaped (a row is untrusted text)."""

import json
import re

import pyarrow as pa
import pytest
import yaml

from engine.errors import DataError
from engine.records import CANDIDATE
from engine.report import composition_rows, render_report, summary_rows, collect, write_report
from engine.storage import RunStorage


def metrics(strategy, seed, r, acc, synthetic=0, asked=None):
    return {"task": "qa", "round": r, "strategy": strategy, "train_seed": seed,
            "unit": f"qa/{strategy}/seed_{seed}", "test_accuracy": acc, "train_accuracy": 0.5,
            "n_synthetic": synthetic, "n_train": 4 + synthetic, "n_errors": 3,
            "train_labels": {"seed": {"LOC": 3, "NUM": 1},
                             **({"synthetic": {"NUM": synthetic}} if synthetic else {})}, "fix_rate": 0.5 if r else None,
            "break_rate": 0.1 if r else None, "n_requests": asked, "n_rows_asked": asked,
            "n_accepted": 2 if asked else None, "tokens": 100,
            "rejected_by_reason": {"duplicate": 1} if asked else {},
            "usage": {"predict": {"prompt_tokens": 80, "completion_tokens": 20}},
            "stage_seconds": {"predict": 3.0, "augment": 4.0}, "train": {"wall_seconds": 9.0}}


@pytest.fixture
def run_dir(tmp_path):
    store = RunStorage(tmp_path)
    store.write_text(store.path("config.yaml"), yaml.safe_dump({"config": {
        "rounds": 2, "tasks": [{"name": "qa"}], "strategy": {"name": "llm2llm"},
        "student": {"model": "tiny"}, "teacher": {"model": "big"},
        "compare": {"strategies": ["llm2llm", "seed_only"], "seeds": [0, 1]}}}))
    accs = {("llm2llm", 0): [0.5, 0.7], ("llm2llm", 1): [0.4, 0.6], ("seed_only", 0): [0.5],
            ("seed_only", 1): [0.4]}
    for (strategy, seed), history in accs.items():
        for r, acc in enumerate(history):
            key = f"qa/{strategy}/seed_{seed}"
            asked = 3 if strategy == "llm2llm" and r == 0 else None
            store.write_json(f"{store.round_dir(key, r)}/metrics.json",
                             metrics(strategy, seed, r, acc, synthetic=2 * r, asked=asked))
    stage_dir = store.stage_dir("qa/llm2llm/seed_0", 0, "augment")
    row = {"id": "a", "task": "qa", "input": "How far is Rome ?", "target": "NUM",
           "label": "NUM", "origin": "synthetic", "round": 0, "seed_id": "e1",
           "trigger_prediction": "LOC", "teacher_model": "big", "prompt_hash": "h",
           "sampling": "{}", "accepted": True, "reject_reason": ""}
    store.write_table(stage_dir, pa.Table.from_pylist([
        row, dict(row, id="b", input="<script>alert(1)</script>", accepted=False,
                  reject_reason="label_names: mostly label names")], schema=CANDIDATE))
    store.finish_stage(stage_dir, "augment")
    return str(tmp_path)


def test_summary_is_the_last_round_over_seeds(run_dir):
    rows = {r["strategy"]: r for r in summary_rows(collect(run_dir)["qa"])}
    assert rows["llm2llm"]["test_accuracy"] == "0.650"
    assert rows["llm2llm"]["spread"] == "0.600 to 0.700"
    assert rows["seed_only"]["test_accuracy"] == "0.450" and rows["seed_only"]["round"] == 0
    assert rows["llm2llm"]["teacher requests"] == 6 and rows["llm2llm"]["synthetic rows"] == 2
    assert rows["llm2llm"]["shipped"] == "-"  # no guard rows: no round is chosen


def test_summary_shows_the_round_each_seed_ships_when_guard_rows_chose_it(run_dir):
    store = RunStorage(run_dir)
    for seed, guard in ((0, [0.9, 0.8]), (1, [0.5, 0.6])):  # seed 0 ships round 0 (0.5)
        for r, g in enumerate(guard):
            path = f"{store.round_dir(f'qa/llm2llm/seed_{seed}', r)}/metrics.json"
            store.write_json(path, {**json.loads(store.read_text(path)), "guard_accuracy": g})
    rows = {r["strategy"]: r for r in summary_rows(collect(run_dir)["qa"])}
    assert rows["llm2llm"]["shipped"] == "0.550 (rounds 0, 1)"
    assert rows["llm2llm"]["test_accuracy"] == "0.650"  # the last round's, as before


def test_report_has_every_plot_and_escapes_the_rows(run_dir, tmp_path):
    page = render_report(run_dir)
    assert page.count("<svg") == 4 and "<?xml" not in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "How far is Rome ?" in page and "label_names: mostly label names" in page
    assert re.search(r"<td>llm2llm</td><td>2</td><td>1</td><td>0.650</td>", page)
    out = write_report(run_dir)
    assert out.endswith("report.html") and "Task qa" in open(out).read()


def test_a_run_without_finished_rounds_says_so_and_a_non_run_is_named(run_dir, tmp_path):
    empty = tmp_path / "empty"
    store = RunStorage(empty)
    store.write_text(store.path("config.yaml"), yaml.safe_dump(
        {"config": {"rounds": 2, "tasks": [{"name": "qa"}]}}))
    assert "No round has finished yet" in render_report(str(empty))
    with pytest.raises(DataError, match="not a run directory"):
        render_report(str(tmp_path / "nothing"))
    json.dumps(collect(run_dir)["qa"])  # plain data, as a notebook would want it


def test_the_training_sets_composition_per_round_sums_the_seeds(run_dir):
    """What each round trained on: rows, the teacher's share, labels by origin (a round whose
    written rows are all one label shows it)."""
    rows = {(r["strategy"], r["round"]): r for r in composition_rows(collect(run_dir)["qa"])}
    assert rows[("llm2llm", 0)] == {"strategy": "llm2llm", "round": 0, "rows": 8, "written": 0,
                                    "share": "0.00", "labels": "seed: LOC 6, NUM 2"}
    assert rows[("llm2llm", 1)]["share"] == "0.33"  # 2 of 6 per seed
    assert rows[("llm2llm", 1)]["labels"] == "seed: LOC 6, NUM 2; synthetic: NUM 4"
    assert "share written" in render_report(run_dir)
