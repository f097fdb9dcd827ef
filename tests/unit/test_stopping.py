"""Stopping rules and teacher budgets with fake backends: why a unit stops, that the round
after the budget is spent still trains on the last rows, and that caps hold."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import RunConfig, StopConfig
from engine.driver import RoundLoop
from engine.stopping import stop_reason
from engine.tasks import build_task
from tests.fakes import FakeGenerator, FakeTrainer
from tests.unit.test_driver import student, teacher

ROOT = Path(__file__).resolve().parents[2]


def run_loop(tmp_path, rounds=4, max_tries=1, **stop):
    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "rounds": rounds, "stop": stop,
        "teacher": {"max_tries": max_tries},
        "tasks": [{"name": "arithmetic", "n_seed": 10, "n_test": 6}]})
    tasks = [build_task(t, cfg.seed) for t in cfg.tasks]
    gen_t, trainer = FakeGenerator(teacher), FakeTrainer()
    loop = RoundLoop(cfg, tasks, "base", "teacher", FakeGenerator(student), gen_t, trainer,
                     log=lambda m: None)
    history = [m for ms in loop.run() for m in ms]
    return cfg, history, gen_t, trainer


def test_a_request_budget_holds_exactly_and_the_next_round_still_trains(tmp_path):
    cfg, history, gen_t, trainer = run_loop(tmp_path, max_requests=7, max_tries=2,
                                            when_nothing_added=False)
    sent = sum(req.num_rows for stage, _, req in gen_t.calls if stage == "augment")
    assert sent == sum(m["n_requests"] or 0 for m in history) == 7
    last = history[-1]
    assert last["stop_reason"].startswith("teacher budget spent: 7 of 7 teacher requests")
    assert last["n_requests"] is None  # it did not ask, but it trained on what came before
    assert last["n_train"] == 10 + sum(m["n_accepted"] for m in history[:-1])
    assert len(trainer.calls) == len(history) < cfg.rounds


def test_a_per_round_cap_cuts_each_round(tmp_path):
    _, history, _, _ = run_loop(tmp_path, rounds=3, max_requests_per_round=2,
                                when_nothing_added=False)
    assert [m["n_requests"] for m in history] == [2, 2, None]


def test_a_token_budget_stops_before_the_next_ask(tmp_path):
    _, history, gen_t, _ = run_loop(tmp_path, max_tokens=1, max_tries=3)
    asks = [req for stage, _, req in gen_t.calls if stage == "augment"]
    assert len(asks) == 1  # the first ask passed the budget; no top-up, no second round ask
    assert "teacher tokens (stop.max_tokens)" in history[-1]["stop_reason"]


def test_patience_and_nothing_added():
    rules = StopConfig(patience=2)
    accs = lambda *xs: [{"round": i, "test_accuracy": a, "n_accepted": 3, "n_errors": 1}  # noqa
                        for i, a in enumerate(xs)]
    assert stop_reason(rules, accs(0.5, 0.6, 0.6)) == ""
    assert stop_reason(rules, accs(0.5, 0.6, 0.6, 0.55)).startswith(
        "test accuracy has not beaten 0.600 for 2 round(s)")
    assert stop_reason(rules, accs(0.6, 0.5, 0.7)) == ""
    nothing = [{"round": 1, "test_accuracy": 0.5, "n_accepted": 0, "n_errors": 4}]
    assert "round 1 added no rows (4 errors mined)" in stop_reason(StopConfig(), nothing)
    assert stop_reason(StopConfig(), nothing, from_base=False) == ""  # training goes on
    assert stop_reason(StopConfig(when_nothing_added=False), nothing) == ""


def test_the_reason_is_in_metrics_and_status(tmp_path):
    cfg, history, _, _ = run_loop(tmp_path, rounds=3, max_requests=1)
    reason = history[-1]["stop_reason"]
    saved = json.loads((tmp_path / "run" / "arithmetic" / f"round_{history[-1]['round']}" /
                        "metrics.json").read_text())
    assert saved["stop_reason"] == reason
    from engine.provenance import save_run_record
    save_run_record(cfg, "s", "t")
    out = subprocess.run([sys.executable, "-m", "engine.cli", "status", cfg.run_dir],
                         capture_output=True, text=True, cwd=ROOT, timeout=60).stdout
    assert f"arithmetic stopped after round {history[-1]['round']}: {reason}" in out
    assert f"arithmetic  {history[-1]['round'] + 1}" not in out  # no row for a round not run


@pytest.mark.parametrize("stop", [{"max_requests": -1}, {"patience": 0}, {"budget": 3},
                                  {"max_cost_usd": 1.0}])
def test_bad_stopping_rules_are_refused(stop):
    with pytest.raises(Exception):
        RunConfig.model_validate({"tasks": [{"name": "arithmetic"}], "stop": stop})


def test_a_unit_that_fails_stops_alone_and_the_job_reports_it(tmp_path):
    """Two tasks; the trainer breaks on the second's round 1 (its data, say): the first runs
    every round, the failure is kept with its round and the job ends with UnitsFailed."""
    from engine.errors import UnitsFailed
    from engine.provenance import save_run_record

    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "rounds": 3, "stop": {"when_nothing_added": False},
        "tasks": [{"name": "arithmetic", "n_seed": 10, "n_test": 6},
                  {"name": "sums", "type": "arithmetic", "n_seed": 10, "n_test": 6}]})
    tasks = [build_task(t, cfg.seed) for t in cfg.tasks]

    class BreakingTrainer(FakeTrainer):
        def __call__(self, examples, base_model, out_dir, task, *args, **kwargs):
            if task == "sums" and "round_1" in out_dir:
                raise ValueError("row 7 of sums has no answer")
            return super().__call__(examples, base_model, out_dir, task, *args, **kwargs)

    trainer = BreakingTrainer()
    loop = RoundLoop(cfg, tasks, "base", "teacher", FakeGenerator(student),
                     FakeGenerator(teacher), trainer, log=lambda m: None)
    seen = []
    with pytest.raises(UnitsFailed) as caught:
        for round_metrics in loop.run():
            seen += [(m["unit"], m["round"]) for m in round_metrics]
    # side by side, the two tasks' rounds come back in whichever order they finish
    assert sorted(seen) == [("arithmetic", 0), ("arithmetic", 1), ("arithmetic", 2),
                            ("sums", 0)]
    assert caught.value.failures == {"sums": "round 1: row 7 of sums has no answer"}
    failure = json.loads((tmp_path / "run" / "sums" / "round_1" / "FAILED.json").read_text())
    assert failure["error"] == "row 7 of sums has no answer"
    save_run_record(cfg, "s", "t")
    out = subprocess.run([sys.executable, "-m", "engine.cli", "status", cfg.run_dir],
                         capture_output=True, text=True, cwd=ROOT, timeout=60).stdout
    assert "sums stopped after round 1: failed: row 7 of sums has no answer" in out
    # fixed and run again: the failure record goes, sums resumes from its round 1
    again = RoundLoop(cfg, tasks, "base", "teacher", FakeGenerator(student),
                      FakeGenerator(teacher), FakeTrainer(), log=lambda m: None)
    list(again.run())
    assert not (tmp_path / "run" / "sums" / "round_1" / "FAILED.json").exists()
    assert json.loads((tmp_path / "run" / "sums" / "round_2" / "metrics.json").read_text())


def test_a_stopped_unit_s_last_round_stands_for_the_rounds_it_did_not_run(tmp_path):
    from engine.compare import compare_rows

    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "rounds": 3, "stop": {"max_requests": 1},
        "compare": {"strategies": ["llm2llm", "seed_only"], "seeds": [0]},
        "tasks": [{"name": "arithmetic", "n_seed": 10, "n_test": 6}]})
    tasks = [build_task(t, cfg.seed) for t in cfg.tasks]
    loop = RoundLoop(cfg, tasks, "base", "teacher", FakeGenerator(student),
                     FakeGenerator(teacher), FakeTrainer(), log=lambda m: None)
    history = [m for ms in loop.run() for m in ms]
    last = [m for m in history if m["strategy"] == "llm2llm"][-1]
    assert last["round"] == 1 and last["stop_reason"]
    rows = {(r["strategy"], r["round"]): r for r in compare_rows(cfg)}
    assert rows[("llm2llm", 2)]["seeds"] == 1  # round 2 did not run: round 1 stands for it
    assert rows[("llm2llm", 2)]["test_accuracy_by_seed"] == [last["test_accuracy"]]
