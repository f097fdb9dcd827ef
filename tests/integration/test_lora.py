"""A LoRA student on the real stack: two rounds of TREC with `student.lora`, a tiny Llama as
student base and as teacher, so one vLLM engine (the teacher's) serves the teacher and every
round's adapter (engine/generation/backend.py: teacher_serves_student). PEFT trains each
round's adapter under Ray Train + DeepSpeed; the engine answers the predict stage's rows with
the round's adapter by a LoRARequest; export writes the adapter, or merged into the base."""

import json
import re
import shutil
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
TREC = ROOT.parent / "shared" / "data" / "trec"
RANK = 8


@pytest.fixture(scope="module")
def peaked_model(tiny_model, tmp_path_factory) -> str:
    """The tiny Llama with larger embeddings (tied to its output layer): a random 64-wide
    model with the usual 0.02 spreads its next-token probability almost evenly over 49k
    tokens, so greedy answers hang on near-ties that fp32 (transformers) and bf16 (vLLM)
    break differently. Larger output weights make each step's choice clear."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    torch.manual_seed(1)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 1.0)
    out = tmp_path_factory.mktemp("peaked-llama")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def run(peaked_model, tmp_path_factory):
    if not TREC.is_dir():
        pytest.skip(f"real TREC data not found at {TREC}")
    run_dir = tmp_path_factory.mktemp("lora")
    config = {
        "run_dir": str(run_dir), "rounds": 2, "seed": 0,
        "stop": {"when_nothing_added": False},
        "tasks": [{"name": "trec", "n_seed": 8, "n_test": 10,
                   "data": {"train": str(TREC / "train.jsonl"),
                            "test": str(TREC / "test.jsonl")}}],
        # the same model, dtype and context as the teacher: the teacher's engine serves both
        "student": {"model": peaked_model, "max_tokens": 8, "max_model_len": 1024,
                    "gpu_memory_utilization": 0.1,
                    "lora": {"rank": RANK, "alpha": 16, "dropout": 0.0}},
        "teacher": {"model": peaked_model, "gpu_memory_utilization": 0.1, "max_tokens": 120,
                    "max_model_len": 1024, "n_per_error": 1, "constrain_format": True,
                    "max_tries": 1},
        # a high rate: the random-weight base learns the labels' format in a few steps, so
        # the adapter's answers are far from the base's
        "train": {"num_workers": 1, "epochs": 3, "batch_size": 2, "max_seq_len": 96,
                  "lr": 1e-2},
    }
    path = run_dir / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "jobs.run", "--config", str(path)]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    (run_dir / "job.out").write_text(out.stdout + out.stderr)  # for a failing test's reader
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return run_dir, path, command, out.stdout + out.stderr


def table(run_dir: Path, r: int, stage: str, name: str = "part-0") -> list[dict]:
    return pq.read_table(run_dir / "trec" / f"round_{r}" / stage / f"{name}.parquet").to_pylist()


def test_each_round_trains_an_adapter_over_the_frozen_base(run, peaked_model):
    run_dir = run[0]
    for r in (0, 1):
        model = run_dir / "trec" / f"round_{r}" / "train" / "model"
        config = json.loads((model / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == peaked_model and config["r"] == RANK
        assert (model / "adapter_model.safetensors").is_file()
        assert not (model / "model.safetensors").exists()  # the base is never copied
        assert (model / "adapter_model.safetensors").stat().st_size < \
            (Path(peaked_model) / "model.safetensors").stat().st_size / 2


def test_one_engine_serves_the_teacher_and_every_rounds_adapter(run):
    """No engine starts for the student, in round 0 or 1: every answer of both rounds'
    predict stages and of the teacher comes from one replica process (its own name, host and
    pid, on each row it answered)."""
    run_dir, _, _, output = run
    assert "served by the teacher's engines" in output
    assert len(re.findall(r"vLLM replica\(s\) of .* ready", output)) == 1
    replicas = {stage: {row["replica"] for row in table(run_dir, r, stage, "generations")}
                for r, stage in ((0, "predict"), (0, "augment"), (1, "predict"))}
    assert len(set().union(*replicas.values())) == 1, replicas


def _answers(model, tokenizer, conversations: list) -> list[str]:
    """Greedy answers of a transformers model, as the run's predict stage asks."""
    import torch

    answers = []
    for messages in conversations:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=8, do_sample=False)
        answers.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    return answers


def test_the_adapter_answers_and_the_exported_adapter_answers_alike(run, peaked_model, tmp_path):
    """The run's round-1 answers are the adapter's, not the base's: transformers with the
    exported adapter (peft) and the exported merged model answer the test rows as the run's
    predict stage did, the base model alone otherwise; the exported training set is round
    1's, with its lineage."""
    import datasets
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, path, _, _ = run
    for merge in (False, True):
        out = subprocess.run([sys.executable, "-m", "engine.cli", "export", str(run_dir),
                              "--out", str(tmp_path / str(merge))]
                             + (["--merge"] if merge else []),
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    adapter_dir, merged_dir = tmp_path / "False" / "trec" / "model", \
        tmp_path / "True" / "trec" / "model"
    exported = datasets.load_from_disk(str(tmp_path / "False" / "trec" / "dataset"))
    trained_on = table(run_dir, 1, "data")  # round 1's training set: the last trained round
    assert exported.num_rows == len(trained_on)
    assert list(exported["id"]) == [row["id"] for row in trained_on]
    assert {"origin", "seed_id", "teacher_model", "prompt_hash", "round"} <= \
        set(exported.column_names)
    assert (adapter_dir / "adapter_config.json").is_file()
    assert "AutoPeftModelForCausalLM" in (adapter_dir / "README.md").read_text()
    assert (merged_dir / "model.safetensors").is_file()
    assert not (merged_dir / "adapter_config.json").exists()

    cfg = load_config(str(path))
    task = build_task(cfg.tasks[0], cfg.seed)
    test_rows = task.splits()[1]
    conversations = [task.student_messages(row["input"]) for row in test_rows]
    predicted = {row["id"]: row["output"] for row in table(run_dir, 1, "predict")
                 if row["split"] == "test"}
    ran = [predicted[row["id"]] for row in test_rows]

    tokenizer = AutoTokenizer.from_pretrained(peaked_model)
    adapter = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir)).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    base = AutoModelForCausalLM.from_pretrained(peaked_model).eval()
    with_adapter, from_merged, from_base = (_answers(m, tokenizer, conversations)
                                            for m in (adapter, merged, base))
    same = lambda a, b: sum(x.strip() == y.strip() for x, y in zip(a, b))  # noqa: E731
    assert same(with_adapter, ran) == len(ran), (with_adapter, ran)
    assert same(from_merged, ran) == len(ran), (from_merged, ran)
    assert same(from_base, ran) < len(ran) / 2, (from_base, ran)


def test_a_resumed_round_answers_from_the_cache_keyed_by_the_adapter(run):
    """The predict stage lost (as a crash before its manifest would): the re-run answers
    from the response cache, whose keys name the adapter's content, with the same rows."""
    run_dir, _, command, _ = run
    predict = run_dir / "trec" / "round_1" / "predict"
    before = table(run_dir, 1, "predict", "generations")
    shutil.rmtree(predict)
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    again = table(run_dir, 1, "predict", "generations")
    assert [r["output"] for r in again] == [r["output"] for r in before]
    assert all(r["cached"] for r in again)
