"""`llm2llm compare` on the real stack: two strategies x two training seeds in one job, tiny
random-weight model as student and teacher, the built-in arithmetic task."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compare_run(tiny_model, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("compare")
    config = {
        "run_dir": str(run_dir), "rounds": 2, "seed": 0,
        # every round runs even when the tiny teacher's rows are all rejected
        "stop": {"when_nothing_added": False},
        # 8 rows in batches of 2 x 2 workers: two steps an epoch, whose order the seed sets
        "tasks": [{"name": "arithmetic", "n_seed": 8, "n_test": 4}],
        # a tiny model needs little of the machine's memory (a CPU engine reserves this share)
        "student": {"model": tiny_model, "max_tokens": 16, "max_model_len": 1024,
                    "gpu_memory_utilization": 0.1},
        "teacher": {"model": tiny_model, "gpu_memory_utilization": 0.1,
                    "max_tokens": 120, "max_model_len": 1024,
                    "n_per_error": 1, "constrain_format": True, "max_tries": 1},
        # lr high enough that two steps survive the bf16 the student is saved in
        "train": {"num_workers": 2, "epochs": 1, "batch_size": 4,
                  "max_seq_len": 128, "lr": 0.01},
    }
    path = run_dir / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run([sys.executable, "-m", "engine.cli", "compare", str(path),
                          "--strategies", "llm2llm,seed_only", "--seeds", "0,1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return run_dir, out.stdout


def weights(unit_dir: Path, r: int) -> str:
    path = unit_dir / f"round_{r}" / "train" / "model" / "model.safetensors"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_compare_table_has_every_strategy_round_and_seed(compare_run):
    run_dir, stdout = compare_run
    rows = json.loads((run_dir / "compare.json").read_text())
    assert [(r["strategy"], r["round"], r["seeds"]) for r in rows] == [
        ("llm2llm", 0, 2), ("llm2llm", 1, 2), ("seed_only", 0, 2), ("seed_only", 1, 2)]
    assert (run_dir / "compare.parquet").is_file()
    assert "test_acc" in stdout and "+-std" in stdout
    for row in rows:
        assert len(row["test_accuracy_by_seed"]) == 2
        assert 0 <= row["test_accuracy_mean"] <= 1


def test_seeds_train_differently_and_strategies_share_round_0(compare_run):
    run_dir, _ = compare_run
    units = run_dir / "arithmetic"
    # round 0 is the same training (seed data, same seed) whatever the strategy: computed
    # once per seed, and copied...
    for seed in (0, 1):
        assert weights(units / "llm2llm" / f"seed_{seed}", 0) == weights(
            units / "seed_only" / f"seed_{seed}", 0)
        manifest = json.loads((units / "seed_only" / f"seed_{seed}" / "round_0" / "train" /
                               "MANIFEST.json").read_text())
        assert manifest["copied_from"] == f"arithmetic/llm2llm/seed_{seed}"
    # ...and another training seed is another student
    assert weights(units / "llm2llm" / "seed_0", 0) != weights(units / "llm2llm" / "seed_1", 0)
    # seed_only trains once and never asks the teacher
    assert not (units / "seed_only" / "seed_0" / "round_1").exists()
    assert not (units / "seed_only" / "seed_0" / "round_0" / "augment").exists()
    metrics = json.loads((units / "llm2llm" / "seed_1" / "round_0" / "metrics.json").read_text())
    assert metrics["n_targets"] == metrics["n_errors"] and metrics["train_seed"] == 1
