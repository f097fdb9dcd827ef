"""S3 on the real stack: `llm2llm compare --strategies s3,zerogen` over three rounds of RTE (a
pair task: the teacher writes hypotheses on real premises) with no labelled seed. Round 0 writes
the synthetic seed (s3: rationales from the tiny Llama teacher through vLLM, then examples on
each; zerogen: as many from the description), rounds 1 and 2 train a tiny BERT encoder (Ray
Train + DeepSpeed) and predict with Ray Data; s3 mines the real validation rows and extrapolates
its errors. One task: a pair task goes through every step a one-text task does, and more (the
one-text path on the real stack: test_two_rounds, test_compare; s3's on fakes: unit tests).
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from engine.config import load_config
from engine.tasks import build_task

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RTE = ROOT.parent / "shared" / "data" / "rte"
N_VALIDATION, N_TEST = 8, 8


@pytest.fixture(scope="module")
def run(tiny_encoder, tiny_model, tmp_path_factory):
    if not RTE.is_dir():
        pytest.skip(f"real RTE data not found at {RTE}")
    run_dir = tmp_path_factory.mktemp("s3")
    config = {
        "run_dir": str(run_dir), "rounds": 3, "seed": 0,
        # every round runs even when the tiny teacher's rows are all rejected
        "stop": {"when_nothing_added": False},
        # no labelled seed; validation rows come from train, the test rows from GLUE dev
        "tasks": [{"name": "rte", "n_seed": 0, "n_validation": N_VALIDATION, "n_test": N_TEST,
                   "fields": {"text": "premise", "text_b": "hypothesis", "label": "label"},
                   "data": {"train": str(RTE / "train.jsonl"),
                            "test": str(RTE / "validation.jsonl")}}],
        "strategy": {"rationales_per_label": 2, "seed_rows_per_label": 4},
        "student": {"kind": "sequence_classification", "model": tiny_encoder, "batch_size": 8},
        "teacher": {"model": tiny_model, "max_tokens": 120, "max_model_len": 1024,
                    "n_per_error": 1, "constrain_format": True, "max_tries": 2,
                    "gpu_memory_utilization": 0.05},
        # training is not what this test is about: one worker, the CPU defaults (ZeRO off)
        "train": {"num_workers": 1, "epochs": 1, "batch_size": 2,
                  "max_seq_len": 64, "lr": 1e-3},
    }
    path = run_dir / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run([sys.executable, "-m", "engine.cli", "compare", str(path),
                          "--strategies", "s3,zerogen", "--seeds", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return run_dir / "rte"


def table(unit: Path, r: int, stage: str, name: str = "part-0") -> list[dict]:
    return pq.read_table(unit / f"round_{r}" / stage / f"{name}.parquet").to_pylist()


def metrics(unit: Path, r: int) -> dict:
    return json.loads((unit / f"round_{r}" / "metrics.json").read_text())


def test_round_0_writes_the_seed_on_the_teachers_rationales(run):
    unit = run / "s3" / "seed_0"
    rationales = table(unit, 0, "augment", "rationales")
    cfg = load_config(run.parent / "job.yaml")
    labels = sorted(build_task(cfg.tasks[0], cfg.seed).labels)
    assert len(labels) == 2
    assert sorted(r["label"] for r in rationales) == [labels[0]] * 2 + [labels[1]] * 2
    candidates = table(unit, 0, "augment")
    assert {c["seed_id"] for c in candidates} <= {r["id"] for r in rationales}
    accepted = [c for c in candidates if c["accepted"]]
    trained = table(unit, 1, "data")
    assert len(trained) == len(accepted) > 0
    assert {r["origin"] for r in trained} == {"synthetic"}
    assert metrics(unit, 0)["n_train"] == 0 and metrics(unit, 1)["n_train"] == len(accepted)


def test_errors_come_from_the_validation_rows_and_are_extrapolated(run):
    unit = run / "s3" / "seed_0"
    predictions = table(unit, 1, "predict")
    mined_on = [p for p in predictions if p["split"] == "train"]
    assert len(mined_on) == N_VALIDATION and {p["origin"] for p in mined_on} == {"validation"}
    assert sum(p["split"] == "test" for p in predictions) == N_TEST
    errors = table(unit, 1, "mine")
    assert len(errors) == sum(not p["correct"] for p in mined_on)
    # s3 stratifies its errors: it asks about errors only, at least one, and about no label
    # beyond its share (rounded up) of the mined rows' label mix
    asked = {c["seed_id"] for c in table(unit, 1, "augment")}
    label_of = {e["id"]: e["label"] for e in errors}
    assert asked <= set(label_of) and (asked or not errors)
    cfg = load_config(run.parent / "job.yaml")
    _, test, validation, _ = build_task(cfg.tasks[0], cfg.seed).splits()
    mined_labels = [v["label"] for v in validation]
    for label in set(label_of.values()):
        cap = math.ceil(len(errors) * mined_labels.count(label) / len(mined_labels))
        assert sum(label_of[i] == label for i in asked) <= cap, (label, asked)
    assert sorted(p["id"] for p in mined_on) == sorted(v["id"] for v in validation)
    held_out = {r["input"] for r in test + validation}
    assert not {r["input"] for r in table(unit, 2, "data")} & held_out
    assert metrics(unit, 2)["test_accuracy"] is not None


def test_zerogen_writes_as_many_rows_from_the_description(run):
    s3, zerogen = run / "s3" / "seed_0", run / "zerogen" / "seed_0"
    for r in (0, 1):
        assert metrics(zerogen, r)["n_rows_asked"] == metrics(s3, r)["n_rows_asked"]
    assert {r["origin"] for r in table(zerogen, 1, "data")} <= {"synthetic"}
    compare = json.loads((run.parent / "compare.json").read_text())
    assert {(row["strategy"], row["round"]) for row in compare} == {
        (s, r) for s in ("s3", "zerogen") for r in (0, 1, 2)}


def test_on_a_pair_task_the_teacher_writes_hypotheses_on_real_premises(run):
    cfg = load_config(run.parent / "job.yaml")
    task = build_task(cfg.tasks[0], cfg.seed)
    unit = run / "s3" / "seed_0"
    pool = set(task.first_text_pool())
    # every hypothesis the teacher wrote is paired with a premise of a train row no split uses
    parsed = [c for c in table(unit, 0, "augment")
              if not c["reject_reason"].startswith(("unparsed", "teacher_error"))]
    assert parsed and {task.pair_texts(c["input"])[0] for c in parsed} <= pool
    errors = {e["id"]: e["input"] for e in table(unit, 1, "mine")}
    for c in table(unit, 1, "augment"):
        if not c["reject_reason"].startswith(("unparsed", "teacher_error")):
            assert task.pair_texts(c["input"])[0] == task.pair_texts(errors[c["seed_id"]])[0]
    # zerogen, its baseline, writes its hypotheses on premises of the same pool
    zerogen = run / "zerogen" / "seed_0"
    written = [c for c in table(zerogen, 0, "augment")
               if not c["reject_reason"].startswith(("unparsed", "teacher_error"))]
    assert written and {task.pair_texts(c["input"])[0] for c in written} <= pool
