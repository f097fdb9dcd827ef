"""An encoder student (`student.kind: sequence_classification`) through two real rounds: Ray
Train + DeepSpeed fine-tune a tiny BERT with a classifier head over TREC's labels, Ray Data
predicts with an actor pool, the tiny Llama teacher (vLLM, constrained) writes rows."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TREC = ROOT.parent / "shared" / "data" / "trec"
LABELS = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
N_SEED, N_TEST = 12, 8


@pytest.fixture(scope="module")
def run(tiny_encoder, tiny_model, tmp_path_factory):
    if not TREC.is_dir():
        pytest.skip(f"real TREC data not found at {TREC}")
    run_dir = tmp_path_factory.mktemp("encoder")
    config = {
        "run_dir": str(run_dir), "rounds": 2, "seed": 0,
        # every round runs even when the tiny teacher's rows are all rejected
        "stop": {"when_nothing_added": False},
        "tasks": [{"name": "trec", "n_seed": N_SEED, "n_test": N_TEST, "n_validation": 16,
                   "data": {"train": str(TREC / "train.jsonl"), "test": str(TREC / "test.jsonl")}}],
        "student": {"kind": "sequence_classification", "model": tiny_encoder, "batch_size": 8},
        # a tiny model's KV cache needs little of the machine's memory
        "teacher": {"model": tiny_model, "max_tokens": 120, "max_model_len": 1024,
                    "n_per_error": 1, "constrain_format": True, "max_tries": 1,
                    "gpu_memory_utilization": 0.05},
        "train": {"num_workers": 2, "epochs": 1, "batch_size": 4,
                  "max_seq_len": 64, "lr": 1e-3, "select_epoch": "validation"},
    }
    path = run_dir / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return run_dir / "trec", out.stdout


def test_the_student_is_a_classifier_over_the_tasks_labels(run):
    task_dir, stdout = run
    config = json.loads((task_dir / "round_1" / "train" / "model" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert [config["id2label"][str(i)] for i in range(len(LABELS))] == LABELS
    assert "by the encoder student" in stdout  # predicted by the actor pool, not vLLM


def test_the_epoch_is_chosen_on_the_validation_rows(run):
    """train.select_epoch: validation: rank 0 scores the student on the task's validation rows
    after each epoch (here one) and records the scores and the epoch it kept."""
    task_dir, _ = run
    for r in (0, 1):
        info = json.loads((task_dir / f"round_{r}" / "train" / "MANIFEST.json").read_text())["info"]
        assert info["chosen_epoch"] == 1 and len(info["epoch_scores"]) == 1
        assert 0 <= info["epoch_scores"][0] <= 1  # an accuracy over the 16 rows
        assert round(info["epoch_scores"][0] * 16, 3).is_integer()


def test_a_trainings_wall_time_is_split_into_its_phases(run):
    """The train manifest says where the wall time went (worker start, set-up, steps, save,
    copy, Ray Train's own), and the phases add up to the wall time."""
    task_dir, _ = run
    info = json.loads((task_dir / "round_0" / "train" / "MANIFEST.json").read_text())["info"]
    phases = info["phases"]
    assert list(phases) == ["start_s", "set_up_s", "train_s", "save_s", "copy_s", "other_s"]
    assert all(v >= 0 for k, v in phases.items() if k != "other_s")
    assert phases["set_up_s"] > 0 and phases["start_s"] > 0
    assert sum(phases.values()) == pytest.approx(info["wall_seconds"], abs=0.1)


def test_predictions_are_label_names_graded_like_any_answer(run):
    task_dir, _ = run
    for r in (0, 1):
        predictions = pq.read_table(task_dir / f"round_{r}" / "predict" / "part-0.parquet")
        rows = predictions.to_pylist()
        assert len(rows) == N_SEED + N_TEST
        assert {row["output"] for row in rows} <= set(LABELS)
        assert all(row["extracted"] == row["output"] for row in rows)  # read back as given
        metrics = json.loads((task_dir / f"round_{r}" / "metrics.json").read_text())
        assert metrics["test_accuracy"] == pytest.approx(
            sum(row["correct"] for row in rows if row["split"] == "test") / N_TEST)


def test_round_1_trains_on_seed_and_accepted_rows(run):
    task_dir, _ = run
    r0 = json.loads((task_dir / "round_0" / "metrics.json").read_text())
    r1 = json.loads((task_dir / "round_1" / "metrics.json").read_text())
    assert r0["n_errors"] > 0 and r1["n_train"] == N_SEED + r0["n_accepted"]
    train = pq.read_table(task_dir / "round_1" / "data" / "part-0.parquet")
    assert set(train.column("label").to_pylist()) <= set(LABELS)


def test_the_exported_student_predicts_as_the_run_did(run, tmp_path):
    """`llm2llm export`: the training set loads with `datasets` and holds round 1's rows, and
    the student, loaded with plain transformers as its model card says, gives the predict
    stage's answers on 10 seed rows."""
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    task_dir, _ = run
    out = subprocess.run([sys.executable, "-m", "engine.cli", "export", str(task_dir.parent),
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    exported = tmp_path / "trec"
    train = datasets.load_from_disk(str(exported / "dataset"))
    metrics = json.loads((task_dir / "round_1" / "metrics.json").read_text())
    assert train.num_rows == metrics["n_train"]
    assert list(train["id"]) == pq.read_table(task_dir / "round_1" / "data" / "part-0.parquet") \
        .column("id").to_pylist()
    assert {"origin", "seed_id", "trigger_prediction", "teacher_model", "prompt_hash",
            "round"} <= set(train.column_names)

    seed = train.filter(lambda row: row["origin"] == "seed").select(range(10))
    tokenizer = AutoTokenizer.from_pretrained(exported / "model")
    model = AutoModelForSequenceClassification.from_pretrained(exported / "model").eval()
    # datasets 5 returns a lazy Column; the tokenizer takes a list
    batch = tokenizer(list(seed["input"]), padding=True, truncation=True, max_length=512,
                      return_tensors="pt")
    with torch.inference_mode():
        labels = [model.config.id2label[i] for i in model(**batch).logits.argmax(-1).tolist()]
    predicted = {row["id"]: row["output"] for row in pq.read_table(
        task_dir / "round_1" / "predict" / "part-0.parquet").to_pylist()}
    assert labels == [predicted[i] for i in list(seed["id"])]
