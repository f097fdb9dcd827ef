"""The round loop with fake backends: LLM2LLM rules, artifacts and metrics, without Ray."""

import json
import random
import re
import zlib

import pyarrow.parquet as pq
import pytest

from engine.config import Prices, RunConfig
from engine.driver import RoundLoop
from engine.tasks import build_task
from tests.fakes import FakeGenerator, FakeTrainer


def student(messages):
    """Never right ("#### 0" answers no problem), or says nothing: every seed row is mined."""
    question = messages[-1]["content"]
    return "#### 0" if zlib.crc32(question.encode()) % 2 else "no idea"


WORDS = ("kites drums lamps socks boats maps cups rings hats bells vans pies owls desks ropes "
         "coats jars fans forks keys").split()


def teacher(messages):
    """Two new, distinct problems per request, a pure function of the request; asked to
    solve one of them (the answer check), it answers right."""
    question = messages[-1]["content"]
    if question.startswith("Solve the math word problem"):
        a, b = (int(x) for x in re.findall(r"sells (\d+) \w+ and (\d+)", question)[0])
        return f"{a} + {b} = {a + b}\n#### {a + b}"
    out = ""
    for k in range(2):
        rng = random.Random(f"{question}#{k}")
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        x, y, z = rng.sample(WORDS, 3)
        out += (f"Question: A shop sells {a} {x} and {b} {y} beside {z}. How many {x} and "
                f"{y} are sold?\nAnswer: {a} + {b} = {a + b}\n#### {a + b}\n")
    return out


def make_loop(tmp_path, rounds=2):
    cfg = RunConfig.model_validate({"run_dir": str(tmp_path / "run"), "rounds": rounds,
                                    "tasks": [{"name": "arithmetic", "n_seed": 10, "n_test": 6}]})
    gen_s, gen_t, trainer = FakeGenerator(student), FakeGenerator(teacher), FakeTrainer()
    loop = RoundLoop(cfg, [build_task(t, cfg.seed) for t in cfg.tasks], "base-model",
                     "teacher-model", gen_s, gen_t, trainer, log=lambda m: None)
    return loop, gen_s, gen_t, trainer


def test_two_rounds_follow_llm2llm_rules(tmp_path):
    loop, gen_s, gen_t, trainer = make_loop(tmp_path)
    history = [m for round_metrics in loop.run() for m in round_metrics]
    r0, r1 = history
    assert r0["n_train"] == 10 and r0["n_errors"] > 0
    assert r0["n_accepted"] == 2 * r0["n_errors"]  # two distinct variants per error
    # round 1 trains on seed + accepted rows, from the base model again
    assert r1["n_train"] == 10 + r0["n_accepted"]
    assert [call[1] for call in trainer.calls] == ["base-model", "base-model"]
    assert trainer.calls[1][0].num_rows == r1["n_train"]
    # the teacher only ever saw seed rows (and its own rows, to check their answers); the
    # last round does not augment
    assert [c[0] for c in gen_t.calls] == ["augment", "check"]
    sent = gen_t.calls[0][2].column("request_id").to_pylist()
    assert all(rid.startswith("arithmetic:train:") for rid in sent)
    # the student predicts over the seed rows only (not synthetic) plus the test set
    assert gen_s.calls[1][2].num_rows == 10 + 6


def test_artifacts_and_metrics_agree(tmp_path):
    loop, *_ = make_loop(tmp_path)
    history = [m for round_metrics in loop.run() for m in round_metrics]
    root = tmp_path / "run" / "arithmetic"
    for m in history:
        rdir = root / f"round_{m['round']}"
        assert json.loads((rdir / "metrics.json").read_text()) == json.loads(json.dumps(m))
        data = pq.read_table(rdir / "data" / "part-0.parquet")
        assert data.num_rows == m["n_train"]
        preds = pq.read_table(rdir / "predict" / "part-0.parquet").to_pylist()
        test = [p for p in preds if p["split"] == "test"]
        assert m["test_accuracy"] == pytest.approx(sum(p["correct"] for p in test) / len(test))
        assert pq.read_table(rdir / "mine" / "part-0.parquet").num_rows == m["n_errors"]
        for stage in ("data", "train", "predict", "mine"):
            assert (rdir / stage / "MANIFEST.json").is_file()
        assert pq.read_table(rdir / "train" / "part-0.parquet").column("loss").to_pylist() == [
            0.9, 0.5]
    cands = pq.read_table(root / "round_0" / "augment" / "part-0.parquet")
    assert cands.num_rows == history[0]["n_generated"]
    assert not (root / "round_1" / "augment").exists()


def test_token_usage_per_stage_and_cost(tmp_path):
    loop, *_ = make_loop(tmp_path)
    loop.cfg.teacher.prices = Prices(prompt_per_million=2.0, completion_per_million=8.0)
    r0, r1 = [m for round_metrics in loop.run() for m in round_metrics]
    rdir = tmp_path / "run" / "arithmetic" / "round_0"
    for stage in ("predict", "augment"):
        gen = pq.read_table(rdir / stage / "generations.parquet").to_pylist()
        usage = r0["usage"][stage]
        assert usage["requests"] == len(gen) > 0
        assert usage["prompt_tokens"] == sum(g["prompt_tokens"] for g in gen)
        assert usage["completion_tokens"] == sum(g["completion_tokens"] for g in gen)
    teacher = r0["usage"]["augment"]
    assert r0["usage"]["predict"]["cost_usd"] is None  # no student prices set
    assert r0["cost_usd"] == pytest.approx(
        (teacher["prompt_tokens"] * 2.0 + teacher["completion_tokens"] * 8.0) / 1e6)
    assert r0["tokens"] == sum(u["prompt_tokens"] + u["completion_tokens"]
                               for u in r0["usage"].values())
    assert set(r1["usage"]) == {"predict"} and r1["cost_usd"] is None  # last round: no teacher


def test_finished_stages_are_loaded_not_rerun(tmp_path):
    loop, *_ = make_loop(tmp_path)
    first = [m for ms in loop.run() for m in ms]
    again, gen_s, gen_t, trainer = make_loop(tmp_path)
    second = [m for ms in again.run() for m in ms]
    assert not gen_s.calls and not gen_t.calls and not trainer.calls
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("stage_seconds", "seconds")}
                        for m in ms]  # noqa: E731
    assert strip(first) == strip(second)


def test_stage_without_manifest_is_redone(tmp_path):
    loop, *_ = make_loop(tmp_path, rounds=1)
    list(loop.run())
    stage = tmp_path / "run" / "arithmetic" / "round_0" / "predict"
    (stage / "MANIFEST.json").unlink()
    (stage / "part-0.parquet").write_bytes(b"truncated")  # as a crash could leave it
    again, gen_s, *_ = make_loop(tmp_path, rounds=1)
    list(again.run())
    assert len(gen_s.calls) == 1  # predict re-ran
    assert pq.read_table(stage / "part-0.parquet").num_rows == 16


def test_stage_with_a_truncated_part_is_redone(tmp_path):
    loop, *_ = make_loop(tmp_path, rounds=1)
    list(loop.run())
    part = tmp_path / "run" / "arithmetic" / "round_0" / "mine" / "part-0.parquet"
    part.write_bytes(part.read_bytes()[:-10])  # manifest intact, part cut short
    again, *_ = make_loop(tmp_path, rounds=1)
    list(again.run())
    assert pq.read_table(part).num_rows > 0  # rewritten whole, and readable


def test_an_encoder_student_gets_the_raw_text_and_the_tasks_labels(tmp_path):
    from tests.unit.test_tasks import yaml_task

    task_cfg = yaml_task(tmp_path, n_test=3)
    cfg = RunConfig.model_validate({"run_dir": str(tmp_path / "run"), "rounds": 1,
                                    "tasks": [task_cfg.model_dump()]})
    task = build_task(cfg.tasks[0], cfg.seed)
    gen_s, trainer = FakeGenerator(lambda messages: "spam"), FakeTrainer()
    loop = RoundLoop(cfg, [task], "base", "teacher", gen_s, FakeGenerator(teacher), trainer,
                     log=lambda m: None)
    list(loop.run())
    examples = trainer.calls[0][0]
    seed, test = task.seed_and_test()
    assert examples.column("input").to_pylist() == [r["input"] for r in seed]
    assert examples.column("label").to_pylist() == [r["label"] for r in seed]
    assert trainer.labels == ["ham", "spam"]  # the head's outputs, in the task's order
    requests = gen_s.calls[0][2]
    assert requests.column("input").to_pylist() == [r["input"] for r in seed + test]
