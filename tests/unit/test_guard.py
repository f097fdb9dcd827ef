"""Guard rows (tasks.<i>.n_guard): held-out rows that choose the round a unit ships. They are
carved without moving any other split, predicted every round, never shown to the teacher,
and they (not the test rows) decide `chosen`, export's round and stop.patience."""

import json

from engine.compare import compare_rows
from engine.config import RunConfig, StopConfig, TaskConfig
from engine.driver import RoundLoop
from engine.export import _round_to_export
from engine.metrics import chosen_round
from engine.stopping import stop_reason
from engine.storage import RunStorage
from engine.tasks import build_task
from tests.fakes import FakeGenerator, FakeTrainer
from tests.unit.test_driver import student, teacher


def test_guard_rows_come_after_the_other_splits_and_move_none_of_them(tmp_path):
    plain = build_task(TaskConfig(name="reviews"), 0).splits()
    guarded = build_task(TaskConfig(name="reviews", n_guard=50), 0).splits()
    assert guarded.seed == plain.seed and guarded.validation == plain.validation
    assert len(guarded.guard) == 50 and {r["origin"] for r in guarded.guard} == {"guard"}
    texts = lambda rows: {r["input"] for r in rows}  # noqa: E731
    # reviews has one labelled file: its test rows are the ones after the guard's
    assert not texts(guarded.guard) & (texts(guarded.seed) | texts(guarded.validation)
                                       | texts(guarded.test))
    assert texts(plain.test) & texts(guarded.guard)  # they were test rows without a guard
    # a task with a test file of its own keeps its test rows
    parts = {}
    for n_guard in (0, 5):
        split = build_task(file_task(tmp_path, n_guard), 0).splits()
        assert [len(part) for part in split] == [8, 10, 6, n_guard]
        parts[n_guard] = split
    assert parts[0][:3] == parts[5][:3]


def test_a_guard_row_never_repeats_a_seed_or_validation_row_s_text(tmp_path):
    split = build_task(file_task(tmp_path, 12, texts=20), 0).splits()  # each text twice
    assert len(split.guard) == 12
    seen = {r["input"] for r in split.seed + split.validation}
    assert not seen & {r["input"] for r in split.guard}


def file_task(tmp, n_guard: int, texts: int = 40) -> TaskConfig:
    for split, n in (("train", 40), ("test", 10)):
        rows = [{"text": f"{split} row {i % texts} about {'cats' if i % 2 else 'dogs'}",
                 "label": "cats" if i % 2 else "dogs"} for i in range(n)]
        (tmp / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TaskConfig(name="pets", type="classification", labels=["cats", "dogs"],
                      fields={"text": "text", "label": "label"}, n_seed=8, n_validation=6,
                      n_guard=n_guard, n_test=None,
                      data={"train": str(tmp / "train.jsonl"), "test": str(tmp / "test.jsonl")})


def loop(tmp_path, rounds=2, n_guard=5, compare=None, teacher=teacher):
    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "rounds": rounds, "compare": compare,
        "stop": {"when_nothing_added": False},
        # the teacher reads held-out rows' errors (validation), never the guard's
        "strategy": {"mine_from": "validation"},
        "tasks": [{"name": "arithmetic", "n_seed": 10, "n_test": 6, "n_validation": 6,
                   "n_guard": n_guard}]})
    tasks = [build_task(t, cfg.seed) for t in cfg.tasks]
    gen_s, gen_t = FakeGenerator(student), FakeGenerator(teacher)
    run = RoundLoop(cfg, tasks, "base", "teacher", gen_s, gen_t, FakeTrainer(),
                    log=lambda m: None)
    history = [m for ms in run.run() for m in ms]
    return cfg, tasks[0], history, gen_s, gen_t


def test_guard_rows_are_predicted_every_round_and_the_teacher_never_reads_them(tmp_path):
    cfg, task, history, gen_s, gen_t = loop(tmp_path)
    split = task.splits()
    guard = split.guard
    assert any(row["input"] in text for req in gen_t.calls for row in split.validation
               for text in req[2].column("messages").to_pylist())
    assert all(m["guard_accuracy"] is not None for m in history)
    predicted = [req for stage, _, req in gen_s.calls if stage == "predict"]
    asked = [req for stage, _, req in gen_t.calls]
    for row in guard:
        assert all(row["id"] in req.column("request_id").to_pylist() for req in predicted)
        assert not any(row["input"] in text for req in asked
                       for text in req.column("messages").to_pylist())
    store = RunStorage(cfg.run_dir)
    graded = store.read_table(store.stage_dir("arithmetic", 0, "predict")).to_pylist()
    ours = [p for p in graded if p["split"] == "guard"]
    assert sorted(p["id"] for p in ours) == sorted(r["id"] for r in guard)
    assert history[0]["guard_accuracy"] == sum(p["correct"] for p in ours) / len(ours)


def test_a_teacher_row_with_a_guard_row_s_text_is_rejected_like_a_test_row_s(tmp_path):
    task = build_task(TaskConfig(name="arithmetic", n_seed=10, n_test=6, n_validation=6,
                                 n_guard=5), 0)
    held = task.splits().guard[0]

    def copies_the_guard(messages):  # fresh rows, and a guard row written back
        return f"{teacher(messages)}Question: {held['input']}\nAnswer: {held['target']}\n"

    cfg, _, _, _, _ = loop(tmp_path, rounds=2, teacher=copies_the_guard)
    store = RunStorage(cfg.run_dir)
    rows = store.read_table(store.stage_dir("arithmetic", 0, "augment")).to_pylist()
    copies = [c for c in rows if c["input"] == held["input"]]
    assert copies and all(c["reject_reason"].startswith("in_protected_set") for c in copies)


def test_without_guard_rows_nothing_is_chosen(tmp_path):
    cfg, _, history, _, _ = loop(tmp_path, n_guard=0, compare={
        "strategies": ["llm2llm"], "seeds": [0]})
    assert all(m["guard_accuracy"] is None for m in history)
    assert all(row["chosen_accuracy_mean"] is None for row in compare_rows(cfg))


def rounds(*guard_test):
    return [{"round": r, "guard_accuracy": g, "test_accuracy": t, "n_accepted": 3}
            for r, (g, t) in enumerate(guard_test)]


def test_the_chosen_round_is_the_best_on_the_guard_rows_and_the_earliest_of_equals():
    assert chosen_round(rounds((0.7, 0.9), (0.8, 0.6), (0.75, 0.95)))["round"] == 1
    assert chosen_round(rounds((0.8, 0.9), (0.6, 0.6), (0.8, 0.95)))["round"] == 0
    assert chosen_round(rounds((None, 0.9), (None, 0.6))) is None


def test_a_compare_reports_each_seed_s_chosen_round_and_export_ships_it(tmp_path):
    cfg, _, history, _, _ = loop(tmp_path, rounds=3, compare={
        "strategies": ["llm2llm"], "seeds": [0, 1]})
    store = RunStorage(cfg.run_dir)
    # the fake student scores the same every round: give the rounds guard scores that differ
    scores = {0: (0.5, 0.8, 0.7), 1: (0.9, 0.6, 0.9)}
    for m in history:
        m = {**m, "guard_accuracy": scores[m["train_seed"]][m["round"]],
             "test_accuracy": [0.1, 0.2, 0.3][m["round"]] + [0.0, 0.01][m["train_seed"]]}
        store.write_json(f"{store.round_dir(m['unit'], m['round'])}/metrics.json", m)
    rows = {r["round"]: r for r in compare_rows(cfg)}
    assert rows[0]["chosen_round_by_seed"] == [0, 0]
    assert rows[1]["chosen_round_by_seed"] == [1, 0]
    assert rows[2]["chosen_round_by_seed"] == [1, 0]  # seed 1: round 2 only equals round 0
    assert rows[2]["chosen_accuracy_by_seed"] == [0.2, 0.11]
    assert rows[2]["test_accuracy_by_seed"] == [0.3, 0.31]  # the last round, as before
    assert _round_to_export(store, "arithmetic/llm2llm/seed_0", 3, None) == 1
    assert _round_to_export(store, "arithmetic/llm2llm/seed_1", 3, None) == 0
    assert _round_to_export(store, "arithmetic/llm2llm/seed_1", 3, 2) == 2  # --round wins
    assert json.loads(store.read_text(f"{store.round_dir('arithmetic/llm2llm/seed_0', 1)}"
                                      f"/metrics.json"))["guard_accuracy"] == 0.8


def test_patience_is_judged_on_the_guard_rows_where_there_are_some():
    rules = StopConfig(patience=1)
    # test accuracy rises, the guard's falls: the guard decides
    assert stop_reason(rules, rounds((0.8, 0.5), (0.7, 0.9))).startswith(
        "guard accuracy has not beaten 0.800 for 1 round(s)")
    assert stop_reason(rules, rounds((0.7, 0.9), (0.8, 0.5))) == ""
    assert stop_reason(rules, rounds((None, 0.9), (None, 0.5))).startswith(
        "test accuracy has not beaten 0.900")
