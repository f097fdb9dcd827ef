"""s3 and zerogen on a sentence-pair task (NLI) with fake backends: as the S3 paper (and
ZeroGen), the teacher writes only hypotheses, on real premises (strategy.real_first_text, their
default on a pair task): a written row's premise from the train rows no split uses, an
extrapolated row's the error's own; the gates judge only the hypothesis."""

import hashlib
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from engine.config import RunConfig
from engine.driver import RoundLoop
from engine.errors import ConfigError
from engine.job import preflight
from engine.tasks import build_task
from tests.fakes import FakeGenerator, FakeTrainer

ROOT = Path(__file__).resolve().parents[2]

TOPICS = ["harbour", "council", "museum", "railway", "festival", "hospital", "library", "bridge"]
VOCAB = [f"{a}{b}" for a in ("bri", "cal", "dor", "fen", "gal", "hol", "jun", "kel")
         for b in ("ax", "eb", "ic", "od", "ul", "yn", "ar", "os")]


def pair(k: int) -> dict:
    """Premise k; an entailed hypothesis restates it, the other denies it."""
    topic = TOPICS[k % 8]
    premise = f"The {topic} of the old town opened again on day {k} after a long repair."
    entailed = k % 2 == 0
    hypothesis = (f"The {topic} opened again on day {k}" if entailed
                  else f"The {topic} stayed closed on day {k}")
    return {"premise": premise, "hypothesis": hypothesis,
            "label": "entailment" if entailed else "not_entailment"}


def write_files(tmp_path) -> dict:
    paths = {}
    for split, offset, n in (("train", 0, 40), ("validation", 100, 12), ("test", 200, 8)):
        paths[split] = tmp_path / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(pair(k + offset)) + "\n" for k in range(n)))
    return paths


def task_config(paths) -> dict:
    return {"name": "nli", "type": "classification", "labels": ["entailment", "not_entailment"],
            "description": "Does the premise entail the hypothesis?",
            "fields": {"text": "premise", "text_b": "hypothesis", "label": "label"},
            "text_names": ["Premise", "Hypothesis"],
            "data": {k: str(v) for k, v in paths.items()}, "n_seed": 0, "n_validation": 10,
            "n_test": 8}


def student(messages):
    """Right on pairs whose day is even, 'entailment' on the others."""
    text = messages[-1]["content"]
    day = re.search(r"Hypothesis: .*?day (\d+)", text)
    right = "not_entailment" if "closed" in text.split("Hypothesis:")[-1] else "entailment"
    return right if day is None or int(day.group(1)) % 2 == 0 else "entailment"


def teacher(messages):
    """Rationales as a numbered list; hypotheses as Hypothesis/Label blocks, unique per
    request; an extrapolation also writes the shown hypothesis back once (a leak)."""
    prompt = messages[-1]["content"]
    if prompt.startswith("List "):
        return "\n".join(f"{k}. the hypothesis restates part {k} of the premise"
                         for k in range(1, 5))
    label = re.search(r"label is:? (not_entailment|entailment)", prompt).group(1)
    digest = hashlib.sha256(prompt.encode()).digest()
    blocks = [f"Hypothesis: the {' '.join(VOCAB[b % 64] for b in digest[4 * k: 4 * k + 4])} "
              f"was seen\nLabel: {label}" for k in range(3)]
    if "got this pair wrong" in prompt:
        shown = prompt.split("Hypothesis: ", 1)[1].split("\n")[0]
        blocks.insert(0, f"Hypothesis: {shown}\nLabel: {label}")
    return "\n".join(blocks)


def run(tmp_path, **strategy):
    paths = write_files(tmp_path)
    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "rounds": 3,
        "strategy": {"name": "s3", "rationales_per_label": 2, "seed_rows_per_label": 4,
                     **strategy},
        "teacher": {"n_per_error": 2},
        "tasks": [task_config(paths)]})
    tasks = [build_task(t, cfg.seed) for t in cfg.tasks]
    gen_t = FakeGenerator(teacher)
    loop = RoundLoop(cfg, tasks, "base", "teacher", FakeGenerator(student), gen_t,
                     FakeTrainer(), log=lambda m: None)
    list(loop.run())  # a generator: one list of metrics per round
    return tmp_path / "run" / "nli", gen_t, tasks[0]


def read(unit, r, stage, name="part-0"):
    return pq.read_table(unit / f"round_{r}" / stage / f"{name}.parquet").to_pylist()


def asks(gen_t) -> list[str]:
    return [json.loads(m)[-1]["content"] for _, _, req in gen_t.calls
            for m in req.column("messages").to_pylist()]


def test_the_seed_is_hypotheses_written_on_unused_real_premises(tmp_path):
    unit, gen_t, task = run(tmp_path)
    _, test, validation, _ = task.splits()
    held = {task.pair_texts(r["input"])[0] for r in test + validation}
    pool = task.first_text_pool()
    assert pool and not set(pool) & held
    accepted = [c for c in read(unit, 0, "augment") if c["accepted"]]
    assert accepted
    premises = {task.pair_texts(c["input"])[0] for c in accepted}
    assert premises <= set(pool) and len(premises) > 1  # each rationale ask its own premise
    for c in accepted:
        assert c["input"].startswith("Premise: ") and "\nHypothesis: the " in c["input"]
    written_on = [a for a in asks(gen_t) if "fits this reason" in a]
    assert written_on and all(a.startswith("Premise: ") and '"Hypothesis: ..."' in a
                              and '"Premise: ..."' not in a for a in written_on)


def test_an_extrapolated_row_keeps_the_errors_premise_and_only_its_hypothesis_is_gated(
        tmp_path):
    unit, gen_t, task = run(tmp_path)
    _, _, validation, _ = task.splits()
    errors = {e["id"]: e for e in read(unit, 1, "mine")}
    candidates = read(unit, 1, "augment")
    assert errors and candidates
    for c in candidates:
        assert task.pair_texts(c["input"])[0] == task.pair_texts(errors[c["seed_id"]]["input"])[0]
    # the validation premise does not make a row a leak; the validation hypothesis does
    shown = {task.pair_texts(v["input"])[1] for v in validation}
    copies = [c for c in candidates if task.pair_texts(c["input"])[1] in shown]
    assert copies and all(c["reject_reason"].startswith("in_protected_set") for c in copies)
    assert any(c["accepted"] for c in candidates)
    # one premise, several hypotheses: not near copies of each other
    assert not any(c["reject_reason"].startswith("duplicate") for c in candidates)


def test_off_the_teacher_writes_both_texts(tmp_path):
    unit, gen_t, _ = run(tmp_path, real_first_text=False)
    written_on = [a for a in asks(gen_t) if "fits this reason" in a]
    assert written_on and all('"Premise: ..."' in a for a in written_on)


def test_zerogen_writes_hypotheses_on_unused_real_premises_drawn_anew_each_round(tmp_path):
    unit, gen_t, task = run(tmp_path, name="zerogen", mine_from="validation")
    pool = set(task.first_text_pool())
    asked = [a for a in asks(gen_t) if "texts to pair as Hypothesis" in a]
    assert asked and all(a.startswith("Premise: ") and '"Premise: ..."' not in a
                         for a in asked)
    premise_of = {}
    for r in (0, 1):
        accepted = [c for c in read(unit, r, "augment") if c["accepted"]]
        assert accepted
        for c in accepted:
            premise = task.pair_texts(c["input"])[0]
            assert premise in pool
            premise_of.setdefault(r, {})[c["seed_id"]] = premise
    assert len(set(premise_of[0].values())) > 1
    # zerogen's slots have the same ids every round; their premises are drawn per round
    both = set(premise_of[0]) & set(premise_of[1])
    assert both and any(premise_of[0][s] != premise_of[1][s] for s in both)


def test_real_first_text_is_refused_for_a_strategy_that_shows_real_pairs():
    with pytest.raises(ValueError, match="real_first_text is for a strategy"):
        RunConfig.model_validate({"strategy": {"name": "llm2llm", "real_first_text": True}})


def test_a_prompt_file_without_the_second_text_templates_is_named_before_any_work(tmp_path):
    paths = write_files(tmp_path)
    own = tmp_path / "s3_pair.yaml"
    builtin = yaml.safe_load((ROOT / "prompts" / "s3" / "pair.yaml").read_text())
    own.write_text(yaml.safe_dump({k: v for k, v in builtin.items()
                                   if not k.endswith("_second")}))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "run"), "rounds": 2, "strategy": {"name": "s3"},
        "tasks": [{**task_config(paths), "s3_prompts": str(own)}]}))
    with pytest.raises(ConfigError, match="extrapolate_user_second.*real_first_text: false"):
        preflight(str(job), [], resolve_models=False)
    assert not (tmp_path / "run").exists()


def test_a_hypothesis_that_repeats_its_premise_is_rejected(tmp_path):
    paths = write_files(tmp_path)
    task = build_task(RunConfig.model_validate({"tasks": [task_config(paths)]}).tasks[0], 0)
    writing = task.writing_second(task.first_text_pool())
    error = {"id": "nli:validation:3", "origin": "validation", "label": "entailment",
             "input": "Premise: The bridge reopened on Monday.\nHypothesis: It stayed shut."}
    parsed = writing.parse_teacher(
        "Hypothesis: the bridge reopened on Monday\nLabel: entailment\n"
        "Hypothesis: The bridge was open again on Monday\nLabel: entailment", error)
    assert parsed[0].reject_reason.startswith("prompt_echo: the Hypothesis repeats")
    assert not parsed[1].reject_reason and parsed[1].input == (
        "Premise: The bridge reopened on Monday.\n"
        "Hypothesis: The bridge was open again on Monday")
