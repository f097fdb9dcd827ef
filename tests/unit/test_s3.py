"""The s3 strategy with fake backends: explain-then-generate seed synthesis, errors mined on
the real validation rows only, error extrapolation, and zerogen at the same number of rows."""

import hashlib
import json
import random
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.config import RunConfig
from engine.driver import RoundLoop
from engine.records import EXAMPLE
from engine.stages.synthesize import ask_rationales, rationale_requests
from engine.stages.train import at_added_share
from engine.strategies import seed_quota
from engine.tasks import build_task
from engine.tasks.base import Task
from tests.fakes import FakeGenerator, FakeTrainer, KeyedTeacher

POSITIVE = ["wonderful", "moving", "brilliant", "joyful", "superb", "charming"]
NEGATIVE = ["dull", "clumsy", "tedious", "awful", "bland", "painful"]
VOCAB = [f"{a}{b}" for a in ("bri", "cal", "dor", "fen", "gal", "hol", "jun", "kel")
         for b in ("ax", "eb", "ic", "od", "ul", "yn", "ar", "os")]
TOPICS = ["acting", "plot", "music", "ending", "cast", "pacing", "script", "visuals"]


def review(word: str, topic: str, k: int) -> str:
    return f"the {topic} of this film was {word} from start to finish, take {k}"


def write_task_files(tmp_path):
    """A two-label sentiment task: train, a separate validation file and test."""
    def rows(offset):
        out = []
        for k in range(24):
            word = (POSITIVE if k % 2 else NEGATIVE)[k % 6]
            out.append({"text": review(word, TOPICS[k % 8], k + offset),
                        "label": "positive" if k % 2 else "negative"})
        return out
    paths = {}
    for split, offset in (("train", 0), ("validation", 100), ("test", 200)):
        paths[split] = tmp_path / f"{split}.jsonl"
        paths[split].write_text("\n".join(json.dumps(r) for r in rows(offset)) + "\n")
    return paths


def task_config(paths, **extra):
    return {"name": "sentiment", "type": "classification", "labels": ["negative", "positive"],
            "description": "Is the movie review positive or negative?",
            "fields": {"text": "text", "label": "label"},
            "data": {k: str(v) for k, v in paths.items()}, "n_test": 8, "n_validation": 10,
            **extra}


def student(messages):
    """Right on texts whose take number is even, otherwise the opposite of the right word."""
    text = messages[-1]["content"].split("Text: ", 1)[1]
    right = "positive" if any(w in text for w in POSITIVE) else "negative"
    take = re.search(r"take (\d+)", text)
    if take and int(take.group(1)) % 2:
        return "negative" if right == "positive" else "positive"
    return right


def teacher(messages):
    """Rationales as a numbered list; examples as Text/Label blocks, unique per request; an
    extrapolation also copies the shown text once (the leak gate must reject it)."""
    prompt = messages[-1]["content"]
    label = re.search(r"label(?: is)?:? (positive|negative)", prompt).group(1)
    words = POSITIVE if label == "positive" else NEGATIVE
    digest = hashlib.sha256(prompt.encode()).digest()
    if prompt.startswith("List "):
        return "\n".join(f"{k}. the review judges the {TOPICS[k]} in {digest.hex()[:6]} ways"
                         for k in range(1, 6))
    blocks = []
    for k in range(3):  # three distinct texts per request, different from other requests'
        picks = [VOCAB[b % len(VOCAB)] for b in digest[4 * k: 4 * k + 4]]
        blocks.append(f"Text: {' '.join(picks)} and a {words[k]} {TOPICS[digest[k] % 8]}\n"
                      f"Label: {label}")
    if "got this text wrong" in prompt:
        shown = prompt.split("):\n", 1)[1].split("\n")[0]
        blocks.insert(0, f"Text: {shown}\nLabel: {label}")
    return "\n".join(blocks)


def s3_loop(tmp_path, strategies=("s3", "zerogen"), rounds=3, n_seed=0, match="targets",
            teacher_gen=None, **strategy):
    paths = write_task_files(tmp_path)
    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "rounds": rounds,
        "strategy": {"rationales_per_label": 3, "seed_rows_per_label": 6, **strategy},
        "teacher": {"n_per_error": 2},
        "compare": {"strategies": list(strategies), "seeds": [0], "match": match},
        "tasks": [task_config(paths, n_seed=n_seed)]})
    tasks = [build_task(t, cfg.seed) for t in cfg.tasks]
    gen_s, gen_t, trainer = FakeGenerator(student), teacher_gen or FakeGenerator(teacher), \
        FakeTrainer()
    loop = RoundLoop(cfg, tasks, "base", "teacher", gen_s, gen_t, trainer, log=lambda m: None)
    history = {(m["strategy"], m["round"]): m for ms in loop.run() for m in ms}
    return tmp_path / "run" / "sentiment", history, gen_t, trainer, tasks[0]


def read(unit_dir, r, stage, name="part-0"):
    return pq.read_table(unit_dir / f"round_{r}" / stage / f"{name}.parquet").to_pylist()


def test_round_0_writes_the_seed_by_explain_then_generate(tmp_path):
    root, history, gen_t, trainer, task = s3_loop(tmp_path)
    unit = root / "s3" / "seed_0"
    rationales = read(unit, 0, "augment", "rationales")
    assert len(rationales) == 3 * 2 and {r["origin"] for r in rationales} == {"rationale"}
    candidates = read(unit, 0, "augment")
    accepted = [c for c in candidates if c["accepted"]]
    # every seed row was written on one rationale, at most its quota (6 rows / 3 rationales)
    assert {c["seed_id"] for c in candidates} <= {r["id"] for r in rationales}
    per_rationale = {r["id"]: sum(c["seed_id"] == r["id"] for c in accepted) for r in rationales}
    assert set(per_rationale.values()) == {seed_quota(6, 3, 8)[0]}
    assert all(c["prompt_hash"] == task.s3_prompts.hash for c in candidates)
    # the rationale shows in the prompt its examples were asked with
    asks = [json.loads(m)[-1]["content"] for stage, _, req in gen_t.calls
            for m in req.column("messages").to_pylist()]
    assert any(rationales[0]["input"] in a and "fits this reason" in a for a in asks)
    # no student in round 0; round 1 trains on the synthetic seed alone
    r0 = history[("s3", 0)]
    assert r0["test_accuracy"] is None and r0["n_train"] == 0
    assert json.loads((unit / "round_0" / "train" / "MANIFEST.json").read_text()
                      )["info"]["skipped"].startswith("no training rows yet")
    first = trainer.calls[0][0]
    assert first.num_rows == len(accepted) == history[("s3", 1)]["n_train"]


def test_errors_are_mined_on_the_real_validation_rows_and_extrapolated(tmp_path):
    root, history, gen_t, _, task = s3_loop(tmp_path)
    unit = root / "s3" / "seed_0"
    _, test, validation, _ = task.splits()
    predicted = [p for p in read(unit, 1, "predict") if p["split"] == "train"]
    assert sorted(p["id"] for p in predicted) == sorted(v["id"] for v in validation)
    mined = read(unit, 1, "mine")
    assert mined and {m["origin"] for m in mined} == {"validation"}
    assert history[("s3", 1)]["mined_from"] == "validation"
    candidates = read(unit, 1, "augment")
    # asked about the errors, at most each label's share of them (stratify_errors)
    assert {c["seed_id"] for c in candidates} <= {m["id"] for m in mined} and candidates
    # the copy of a validation text is rejected as a leak; the rest are accepted
    leaked = [c for c in candidates if c["input"] in {v["input"] for v in validation}]
    assert leaked and all(not c["accepted"] and c["reject_reason"].startswith("in_protected_set")
                      for c in leaked)
    trained = [r["input"] for r in read(unit, 2, "data")]
    assert not set(trained) & {v["input"] for v in validation + test}


def test_zerogen_without_a_seed_writes_as_many_rows_as_s3(tmp_path):
    root, history, _, _, _ = s3_loop(tmp_path)
    for r in (0, 1):
        s3, zerogen = history[("s3", r)], history[("zerogen", r)]
        assert zerogen["n_targets"] == s3["n_targets"] > 0
        assert zerogen["n_rows_asked"] == s3["n_rows_asked"]
    # the paper's Alg. 2: one new example per error (teacher.n_per_error is 2 here)
    assert history[("s3", 1)]["n_rows_asked"] == history[("s3", 1)]["n_targets"]
    data = read(root / "zerogen" / "seed_0", 1, "data")
    assert data and {r["origin"] for r in data} == {"synthetic"}


def test_s3_ignores_a_labelled_seed_that_llm2llm_trains_on(tmp_path):
    root, history, _, trainer, _ = s3_loop(tmp_path, ("llm2llm", "s3"), rounds=2, n_seed=8)
    assert history[("llm2llm", 0)]["n_seed"] == 8 and history[("s3", 1)]["n_seed"] == 0
    assert history[("s3", 0)]["n_train"] == 0  # s3 never copies llm2llm's round 0


def test_rationale_requests_and_parser():
    cfg = RunConfig.model_validate({"tasks": [task_config({}, name="s", data={})]})
    task = build_task(cfg.tasks[0], 0)
    req = rationale_requests(task, ["negative", "positive"], 4, 0, {"temperature": 0.7},
                             constrain_format=True)
    messages = json.loads(req.column("messages")[1].as_py())
    assert "label positive" in messages[-1]["content"] and "4" in messages[-1]["content"]
    assert re.fullmatch(req.column("regex")[0].as_py(),
                        "".join(f"{k}. a reason with words {k}\n" for k in range(1, 5)))
    messy = ('Here are reasons:\n1) "It praises the acting."\n- It uses warm words\n'
             "Reason 3: the tone is upbeat overall\n4. It praises the acting.\nok\n")
    assert Task.parse_rationales(messy, 5) == ["It praises the acting.", "It uses warm words",
                                               "the tone is upbeat overall"]


def test_rationales_are_asked_again_for_a_label_left_short():
    cfg = RunConfig.model_validate({"tasks": [task_config({}, name="s", data={})]})
    task = build_task(cfg.tasks[0], 0)
    answers = iter(["1. one reason only here", "2. a second reason right here",
                    "1. a second reason right here\n2. and a third reason too",
                    "1. positive reason number one\n2. positive reason number two\n"
                    "3. positive reason number three"])

    def respond(messages):
        return next(answers) if "label negative" in messages[-1]["content"] else \
            "1. positive reason number one\n2. positive reason number two\n" \
            "3. positive reason number three"
    gen = FakeGenerator(respond)
    rationales, requests, _ = ask_rationales(
        task, 3, 0, lambda req: gen(req, "t", "augment"),
        lambda labels, sample: rationale_requests(task, labels, 3, 0, {}, False, sample), 3)
    by_label = {}
    for row in rationales.to_pylist():
        by_label.setdefault(row["label"], []).append(row["input"])
    assert by_label["negative"] == ["one reason only here", "a second reason right here",
                                    "and a third reason too"]
    assert len(by_label["positive"]) == 3
    assert requests.num_rows == 2 + 1 + 1  # both labels, then negative twice more


@pytest.mark.parametrize("validation_file", [True, False])
def test_validation_rows_never_overlap_the_seed_or_test(tmp_path, validation_file):
    paths = write_task_files(tmp_path)
    if not validation_file:
        paths.pop("validation")
    cfg = RunConfig.model_validate({"tasks": [task_config(paths, n_seed=6)]})
    seed, test, validation, _ = build_task(cfg.tasks[0], 0).splits()
    assert len(validation) == 10 and {v["origin"] for v in validation} == {"validation"}
    ids = [r["id"] for r in seed + test + validation]
    assert len(set(ids)) == len(ids)
    assert all(":validation:" in v["id"] for v in validation) == validation_file


def test_each_strategy_asks_about_validation_errors_with_its_own_prompt_file(tmp_path):
    """llm2llm mining the validation rows keeps llm2llm's prompt (and records its hash); s3
    asks with its error-extrapolation prompt. Both show a worked request first, answered with
    other real rows (llm2llm: seed rows; s3, which has none: other validation rows), so a
    small teacher sees that "like it" means a new text, not a copy."""
    root, _, gen_t, _, task = s3_loop(tmp_path, ("llm2llm+mine_validation", "s3"), n_seed=8)
    _, _, validation, _ = task.splits()
    shown = {v["input"] for v in validation}
    asked = {}
    for stage, _, requests in gen_t.calls:
        for messages in requests.column("messages").to_pylist():
            messages = json.loads(messages)
            if any(text in messages[-1]["content"] for text in shown):
                wording = ("extrapolate" if "got this text wrong" in messages[-1]["content"]
                           else "llm2llm")
                asked.setdefault(wording, []).append(messages)
    assert set(asked) == {"llm2llm", "extrapolate"}
    seed = {r["input"] for r in read(root / "llm2llm+mine_validation" / "seed_0", 0, "data")}
    for wording, pool in (("llm2llm", seed), ("extrapolate", shown)):
        for messages in asked[wording]:
            assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
            row = next(text for text in shown if text in messages[-1]["content"])
            answer = messages[2]["content"]
            assert row not in answer and any(text in answer for text in pool)
    hashes = {unit: {c["prompt_hash"] for c in read(root / unit / "seed_0", r, "augment")}
              for unit, r in (("llm2llm+mine_validation", 0), ("s3", 1))}
    assert hashes == {"llm2llm+mine_validation": {task.prompts.hash},
                      "s3": {task.s3_prompts.hash}}


def test_a_seed_larger_than_one_answer_is_asked_in_several_requests_per_rationale(tmp_path):
    """seed_rows_per_request: 12 rows a label over 3 rationales is 4 a rationale, asked as 2
    requests of 2 rows each (distinct draws), so a seed of hundreds of rows a label never
    needs one answer to hold them all."""
    class SamplingTeacher(FakeGenerator):
        """The fake teacher, but a repeated prompt's draws answer differently, as a sampling
        engine's do (the fake alone is a function of the prompt)."""

        def __call__(self, requests, model, stage, group=""):
            drawn = [json.dumps([*json.loads(m)[:-1], {**json.loads(m)[-1], "content": json.loads(
                m)[-1]["content"] + f" draw {k}"}]) for m, k in zip(
                requests.column("messages").to_pylist(), requests.column("sample").to_pylist())]
            return super().__call__(requests.set_column(
                requests.schema.get_field_index("messages"), "messages", [drawn]), model, stage,
                group)

    root, history, gen_t, _, _ = s3_loop(tmp_path, strategies=("s3",), rounds=2,
                                         teacher_gen=SamplingTeacher(teacher),
                                         seed_rows_per_label=12, seed_rows_per_request=2)
    unit = root / "s3" / "seed_0"
    rationales = {r["id"] for r in read(unit, 0, "augment", "rationales")}
    accepted = [c for c in read(unit, 0, "augment") if c["accepted"]]
    per_rationale = {}
    for c in accepted:
        per_rationale.setdefault(c["seed_id"].split("#")[0], []).append(c["seed_id"])
    assert set(per_rationale) == rationales
    assert all(len(ids) == 4 and len(set(ids)) == 2 for ids in per_rationale.values())
    assert history[("s3", 0)]["n_targets"] == 2 * len(rationales)
    assert history[("s3", 0)]["n_rows_asked"] == 2 * 2 * len(rationales)


def test_s3_without_extrapolation_writes_the_same_rows_as_the_seed_was(tmp_path):
    """The paper's control (s3+no_extrapolation): later rounds ask for new rationales and rows
    on them, no error shown, and with compare.match rows keep at most s3's rows."""
    root, history, gen_t, _, _ = s3_loop(tmp_path, strategies=("s3", "s3+no_extrapolation"),
                                         match="rows")
    control = root / "s3+no_extrapolation" / "seed_0"
    assert read(control, 1, "augment", "rationales")  # asked again in round 1
    r1, ref = history[("s3+no_extrapolation", 1)], history[("s3", 1)]
    assert r1["budget_matched"] == {"by": "rows", "budget": ref["n_accepted"]}
    assert 0 < r1["n_accepted"] <= ref["n_accepted"]
    # the control's round-1 rows were written on rationales, never on a mined error
    candidates = read(control, 1, "augment")
    assert candidates and all(c["seed_id"].startswith("rationale:") for c in candidates)


def test_no_extrapolation_is_refused_for_a_strategy_without_a_written_seed():
    from engine.config import load_config
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="no_extrapolation.*not llm2llm"):
        load_config(None, ["tasks=[{name: arithmetic}]",
                           "compare.strategies=[llm2llm+no_extrapolation]"])


def test_a_unit_mining_validation_rows_shares_round_0s_student_but_not_its_errors(tmp_path):
    """llm2llm+mine_validation beside llm2llm: the round-0 training is the same and copied,
    the predictions and errors are its own (the validation rows', not the seed's)."""
    root, _, _, _, _ = s3_loop(tmp_path, ("llm2llm", "llm2llm+mine_validation"), rounds=2,
                               n_seed=8)
    plain, variant = root / "llm2llm" / "seed_0", root / "llm2llm+mine_validation" / "seed_0"
    assert {m["origin"] for m in read(plain, 0, "mine")} == {"seed"}
    assert {m["origin"] for m in read(variant, 0, "mine")} == {"validation"}
    manifest = lambda unit, stage: json.loads(  # noqa: E731
        (unit / "round_0" / stage / "MANIFEST.json").read_text())
    assert manifest(variant, "train").get("copied_from") == "sentiment/llm2llm/seed_0"
    assert "copied_from" not in manifest(variant, "predict")


def test_the_fair_floor_trains_on_the_seed_and_the_validation_rows(tmp_path):
    """seed_only+with_validation beside llm2llm+mine_validation: the floor trains on the seed
    plus the validation rows the other shows the teacher (its own round 0, not a copy of the
    seed-only student), and choosing the epoch on those rows is refused."""
    root, history, _, trainer, task = s3_loop(
        tmp_path, ("llm2llm+mine_validation", "seed_only", "seed_only+with_validation"),
        rounds=2, n_seed=8)
    seed, _, validation, _ = task.splits(True)
    floor = root / "seed_only+with_validation" / "seed_0"
    trained = read(floor, 0, "data")
    assert sorted(r["id"] for r in trained) == sorted(r["id"] for r in seed + validation)
    assert history[("seed_only+with_validation", 0)]["n_train"] == len(seed) + len(validation)
    assert history[("seed_only", 0)]["n_train"] == len(seed)
    manifest = json.loads((floor / "round_0" / "train" / "MANIFEST.json").read_text())
    assert "copied_from" not in manifest

    from engine.config import load_config
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="select_epoch: last"):
        load_config(None, ["tasks=[{name: arithmetic}]", "train.select_epoch=validation",
                           "compare.strategies=[llm2llm,seed_only+with_validation]"])



def example_rows(n: int, origin: str, r: int) -> list[dict]:
    return [dict(id=f"{origin}{r}:{k}", task="t", input=f"text {k}", target="a", label="a",
                 origin=origin, round=r, seed_id="", trigger_prediction="", teacher_model="",
                 prompt_hash="", sampling="") for k in range(n)]


def test_added_rows_are_trained_on_at_the_set_share():
    def count(table, origin):
        return table.column("origin").to_pylist().count(origin)

    labelled = pa.Table.from_pylist(example_rows(10, "seed", -1)
                                    + example_rows(3, "synthetic", 0), schema=EXAMPLE)
    more = at_added_share(labelled, 0.5, random.Random(0))  # 3 added rows made 10: repeated
    assert more.num_rows == 20 and count(more, "synthetic") == 10
    assert set(more.column("id").to_pylist()) == set(labelled.column("id").to_pylist())
    fewer = at_added_share(labelled, 0.1, random.Random(0))  # round(10 / 9) = 1 of the 3
    assert count(fewer, "synthetic") == 1 and count(fewer, "seed") == 10
    assert at_added_share(labelled, None, random.Random(0)) is labelled
    # real validation rows (seed_only+with_validation) are not added rows: kept once each
    real = pa.Table.from_pylist(example_rows(10, "seed", -1) + example_rows(5, "validation", -1),
                                schema=EXAMPLE)
    assert at_added_share(real, 0.5, random.Random(0)) is real
    # with no real seed, round 0's synthetic seed is the seed
    synthetic = pa.Table.from_pylist(example_rows(8, "synthetic", 0)
                                     + example_rows(4, "synthetic", 1), schema=EXAMPLE)
    mixed = at_added_share(synthetic, 0.2, random.Random(0))
    assert mixed.num_rows == 10 and mixed.column("round").to_pylist().count(1) == 2


def test_a_round_records_and_trains_on_its_rows_at_the_added_share(tmp_path):
    root, history, _, trainer, _ = s3_loop(tmp_path, strategies=("s3",), added_share=0.5)
    trained = read(root / "s3" / "seed_0", 2, "data")
    added = [r for r in trained if r["round"] >= 1]
    assert added and len(added) == sum(r["round"] == 0 for r in trained)
    assert history[("s3", 2)]["n_train"] == len(trained) == trainer.calls[-1][0].num_rows


def test_the_control_copies_s3s_round_1_student_and_trains_its_own_after(tmp_path):
    """s3+no_extrapolation writes the same seed as s3, so its round-1 student, predictions
    and errors would be s3's: copied, not computed again. From round 2 on their rows differ
    and each trains its own; zerogen's seed differs from round 1 on."""
    root, history, _, trainer, _ = s3_loop(
        tmp_path, strategies=("s3", "s3+no_extrapolation", "zerogen"), match="rows")
    manifest = lambda strategy, r, stage: json.loads(  # noqa: E731
        (root / strategy / "seed_0" / f"round_{r}" / stage / "MANIFEST.json").read_text())
    assert read(root / "s3" / "seed_0", 0, "augment") == \
        read(root / "s3+no_extrapolation" / "seed_0", 0, "augment")
    for stage in ("train", "predict", "mine"):
        copied = manifest("s3+no_extrapolation", 1, stage)
        assert copied["copied_from"] == "sentiment/s3/seed_0"
        assert copied["fingerprint"] == manifest("s3", 1, stage)["fingerprint"]
        assert "copied_from" not in manifest("s3+no_extrapolation", 2, stage)
        assert "copied_from" not in manifest("zerogen", 1, stage)
    assert manifest("s3+no_extrapolation", 2, "train")["fingerprint"] != \
        manifest("s3", 2, "train")["fingerprint"]
    assert (root / "s3+no_extrapolation" / "seed_0" / "round_1" / "train" / "model" /
            "config.json").is_file()
    control, s3 = history[("s3+no_extrapolation", 1)], history[("s3", 1)]
    assert control["test_accuracy"] == s3["test_accuracy"]
    # rounds 1 and 2 of s3 and zerogen, round 2 of the control: five trainings, not six
    assert len(trainer.calls) == 5


def test_the_control_asks_for_new_rationales_in_later_rounds_not_round_0s_again(tmp_path):
    """s3+no_extrapolation asks in round 1 for rationales with round 0's prompts: with the
    same samples the response cache answers round 0's rationales, and the rows written on
    them come out near copies of the seed (on SST-2, 120-145 of a round's candidates were
    rejected as duplicates and the control wrote 11-19 of the 47-63 rows it matched). Its
    later asks take new samples: new rationales, new rows, its budget met."""
    root, history, gen_t, _, _ = s3_loop(
        tmp_path, strategies=("s3", "s3+no_extrapolation"), match="rows",
        teacher_gen=KeyedTeacher(teacher))
    unit = root / "s3+no_extrapolation" / "seed_0"
    texts = lambda r: {x["input"] for x in read(unit, r, "augment", "rationales")}  # noqa: E731
    assert texts(1) and not texts(0) & texts(1)
    r0 = {g["request_id"] for g in read(unit, 0, "augment", "generations")}
    r1 = {g["request_id"] for g in read(unit, 1, "augment", "generations")}
    assert r1 and all("~" in rid for rid in r1) and not r0 & r1
    control, ref = history[("s3+no_extrapolation", 1)], history[("s3", 1)]
    assert 0 < control["n_accepted"] == ref["n_accepted"]
