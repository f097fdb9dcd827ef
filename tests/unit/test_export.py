"""`llm2llm export` on a hand-made run directory: the training set as a `datasets` folder and
parquet with its lineage, the student's folder, and cards that say how both were made. Loading
a real exported student and matching the run's predictions is in
tests/integration/test_encoder_student.py."""

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from engine.cli import main
from engine.errors import DataError
from engine.export import COLUMNS, export_run
from engine.records import EXAMPLE
from engine.storage import RunStorage


def example(rid, question, answer, origin="seed", round_=-1, seed_id=None, **extra):
    return {"id": rid, "task": "arithmetic", "input": question, "target": answer,
            "label": answer, "origin": origin, "round": round_, "seed_id": seed_id or rid,
            "trigger_prediction": "", "teacher_model": "", "prompt_hash": "", "sampling": "",
            **extra}


SEED = [example("a:0", "What is 2 + 3?", "5"), example("a:1", "What is 7 - 4?", "3")]
SYNTHETIC = [example("a:1@r0#0", "What is 9 - 5?", "4", origin="synthetic", round_=0,
                     seed_id="a:1", trigger_prediction="2", teacher_model="teacher-x",
                     prompt_hash="abc123", sampling='{"temperature": 0.7}')]


def put(store, key, r, stage, rows=None, files=None, metrics=None):
    stage_dir = store.stage_dir(key, r, stage)
    if rows is not None:
        store.write_table(stage_dir, pa.Table.from_pylist(rows, schema=EXAMPLE))
    for name, data in (files or {}).items():
        store.write_text(f"{stage_dir}/{name}", data)
    store.finish_stage(stage_dir, stage)
    if metrics is not None:
        store.write_json(f"{store.round_dir(key, r)}/metrics.json", metrics)


def make_run(tmp_path, units=("arithmetic",), strategy="llm2llm"):
    """Two rounds per unit: round 0 trained on the seed and wrote one accepted row (and
    rejected three), round 1 trained on seed + that row."""
    store = RunStorage(tmp_path / "run")
    config = {"rounds": 2, "seed": 0, "tasks": [{"name": "arithmetic", "n_seed": 2}],
              "strategy": {"name": strategy},
              "student": {"model": "tiny-student", "kind": "causal_lm"},
              "teacher": {"model": "tiny-teacher"},
              "train": {"epochs": 2, "lr": 1e-4, "batch_size": 4, "max_seq_len": 128}}
    if len(units) > 1:
        config["compare"] = {"strategies": ["llm2llm", "seed_only"], "seeds": [0]}
    store.write_text(store.path("config.yaml"), yaml.safe_dump(
        {"config": config, "seed": 0, "models": {"student": "/resolved/tiny-student",
                                                 "teacher": "/resolved/tiny-teacher"}}))
    for key in units:
        weights = {"model/config.json": json.dumps({"unit": key}),
                   "model/model.safetensors": f"weights of {key}"}
        put(store, key, 0, "data", SEED)
        put(store, key, 0, "train", files={**weights, "model/model.safetensors": "round 0"},
            metrics={"task": "arithmetic", "round": 0, "strategy": strategy, "n_train": 2,
                     "n_synthetic": 0, "test_accuracy": 0.25, "n_test": 4, "n_requests": 2,
                     "n_generated": 4, "n_accepted": 1,
                     "rejected_by_reason": {"duplicate": 2, "wrong_answer": 1}})
        put(store, key, 1, "data", SEED + SYNTHETIC)
        put(store, key, 1, "train", files=weights,
            metrics={"task": "arithmetic", "round": 1, "strategy": strategy, "n_train": 3,
                     "n_synthetic": 1, "test_accuracy": 0.5, "n_test": 4, "fix_rate": 0.5,
                     "train": {"steps": 6}, "test_answers": {"4": 3, "(none)": 1}})
    return str(tmp_path / "run"), store


def test_the_last_trained_round_is_exported_with_lineage_and_cards(tmp_path):
    run_dir, store = make_run(tmp_path)
    (unit_dir,) = export_run(run_dir, str(tmp_path / "out"))
    assert unit_dir == tmp_path / "out" / "arithmetic"
    loaded = datasets.load_from_disk(str(unit_dir / "dataset"))
    rows = store.read_table(store.stage_dir("arithmetic", 1, "data")).to_pylist()
    assert loaded.num_rows == 3 and list(loaded) == rows
    assert pq.read_table(unit_dir / "train.parquet").to_pylist() == rows
    synthetic = loaded.filter(lambda r: r["origin"] == "synthetic")[0]
    assert (synthetic["seed_id"], synthetic["trigger_prediction"], synthetic["teacher_model"],
            synthetic["prompt_hash"], synthetic["round"]) == ("a:1", "2", "teacher-x", "abc123", 0)
    # the student of round 1, byte for byte
    assert (unit_dir / "model" / "model.safetensors").read_text() == "weights of arithmetic"
    card = (unit_dir / "README.md").read_text()
    assert "rows: 3 (2 seed, 1 synthetic)" in card
    assert "- `duplicate`: 2\n- `wrong_answer`: 1" in card
    assert "1 of 4 rows the teacher wrote were accepted (25%)" in card
    assert "| 1 | 3 | 1 | 0.500 | 0.500 |" in card
    assert all(f"| `{name}` | {meaning} |" in card for name, meaning in COLUMNS.items())
    model_card = (unit_dir / "model" / "README.md").read_text()
    assert "base_model: tiny-student" in model_card  # the config's name, not where it resolved
    assert "test accuracy: 0.500 on 4 test rows" in model_card
    assert "What is 2 + 3?" in model_card  # the student's prompt, rendered for a real row


def test_an_earlier_round_and_every_unit_of_a_compare(tmp_path):
    units = ("arithmetic/llm2llm/seed_0", "arithmetic/seed_only/seed_0")
    run_dir, _ = make_run(tmp_path, units=units)
    assert main(["export", run_dir, "--out", str(tmp_path / "out"), "--round", "0"]) == 0
    for key in units:
        out = tmp_path / "out" / key
        assert datasets.load_from_disk(str(out / "dataset")).num_rows == 2
        assert (out / "model" / "model.safetensors").read_text() == "round 0"
    (one,) = export_run(run_dir, str(tmp_path / "one"), task="arithmetic/seed_only")
    assert one == tmp_path / "one" / "arithmetic" / "seed_only" / "seed_0"


@pytest.mark.parametrize("kwargs, message", [
    ({"round_": 2}, "this run has rounds 0 to 1"),
    ({"task": "trec"}, "no such unit in this run; it has arithmetic"),
])
def test_bad_arguments_name_what_exists(tmp_path, kwargs, message):
    run_dir, _ = make_run(tmp_path)
    with pytest.raises(DataError, match=message):
        export_run(run_dir, str(tmp_path / "out"), **kwargs)


def test_an_untrained_round_and_a_used_folder_are_refused_before_writing(tmp_path):
    run_dir, store = make_run(tmp_path)
    store.fs.delete_dir(store.stage_dir("arithmetic", 1, "train"))  # round 1 still training
    with pytest.raises(DataError, match=r"has not finished training that round \(the last "
                                        r"trained round is 0\)"):
        export_run(run_dir, str(tmp_path / "out"), round_=1)
    used = tmp_path / "used" / "arithmetic"
    used.mkdir(parents=True)
    (used / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="already holds files"):
        export_run(run_dir, str(tmp_path / "used"))
    assert [p.name for p in used.iterdir()] == ["notes.txt"]
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2


def test_a_round_trained_but_not_yet_evaluated_is_exported_without_its_score(tmp_path):
    run_dir, store = make_run(tmp_path)
    store.fs.delete_file(f"{store.round_dir('arithmetic', 1)}/metrics.json")  # predict running
    (unit_dir,) = export_run(run_dir, str(tmp_path / "out"))
    card = (unit_dir / "README.md").read_text()
    assert "- `duplicate`: 2\n- `wrong_answer`: 1" in card  # round 0's teacher rows still
    assert "1 of 4 rows the teacher wrote were accepted" in card
    assert "test accuracy: not measured" in (unit_dir / "model" / "README.md").read_text()
