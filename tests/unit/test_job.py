import os
from pathlib import Path

import pytest
import yaml

from engine.errors import ConfigError
from engine.job import preflight
from engine.provenance import save_run_record
from engine.rerun import first_affected_stage


@pytest.fixture
def saved_run(tmp_path, monkeypatch):
    """A job config whose run_dir already holds its saved config; returns (path, prepared)."""
    monkeypatch.setattr("engine.job.resolve_model", lambda name: f"/models/{name}")
    path = tmp_path / "job.yaml"
    path.write_text(f"run_dir: {tmp_path / 'run'}\ntasks: [{{name: arithmetic, n_seed: 4}}]\n")
    prepared = preflight(str(path), [])
    save_run_record(prepared.cfg, prepared.student_model, prepared.teacher_model)
    return path, prepared


def test_run_dir_with_a_different_config_is_refused(tmp_path, saved_run):
    path, prepared = saved_run
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "versions:" in saved and "seed: 0" in saved
    assert preflight(str(path), []).cfg == prepared.cfg  # same config: resumable
    with pytest.raises(ConfigError, match=r"changed: tasks.0.n_seed, train.lr"):
        preflight(str(path), ["train.lr=0.1", "tasks.0.n_seed=5"])


def test_operational_settings_may_change_on_resume(saved_run):
    path, _ = saved_run
    # How the run executes may change: replicas, warm engines, request rates, prices, Ray.
    preflight(str(path), ["teacher.replicas=2", "student.keep_warm=true", "ray.num_cpus=4",
                          "teacher.prices.prompt_per_million=1",
                          "teacher.prices.completion_per_million=2", "train.log_every=1"])
    # What it produces may not, even alongside operational changes.
    with pytest.raises(ConfigError, match=r"changed: teacher.temperature\)"):
        preflight(str(path), ["teacher.replicas=2", "teacher.temperature=0.1"])


def test_fields_a_saved_config_predates_are_not_compared(tmp_path, saved_run):
    path, _ = saved_run
    saved_path = tmp_path / "run" / "config.yaml"
    saved = yaml.safe_load(saved_path.read_text())
    del saved["config"]["student"]["ignore_eos"]  # as written by an engine without the field
    del saved["config"]["tasks"][0]["n_guard"]
    saved_path.write_text(yaml.safe_dump(saved))
    preflight(str(path), [])
    # set away from its default, such a field does change what the run produces
    with pytest.raises(ConfigError, match=r"changed: tasks.0.n_guard\)"):
        preflight(str(path), ["tasks.0.n_guard=5"])


def test_a_run_saved_with_the_batch_per_worker_resumes_with_the_same_global_batch(
        tmp_path, saved_run):
    """Before 2026-12-05 train.batch_size counted rows per worker: a run saved then with 2
    workers of 4 rows resumes under batch_size 8 (any worker count: workers only split the
    batch), and is refused under 4, which would halve its steps' rows."""
    path, _ = saved_run
    saved_path = tmp_path / "run" / "config.yaml"
    saved = yaml.safe_load(saved_path.read_text())
    del saved["train_batch"]  # as written by an engine that counted the batch per worker
    saved["config"]["train"].update(num_workers=2, batch_size=4)
    saved_path.write_text(yaml.safe_dump(saved))
    preflight(str(path), ["train.batch_size=8"])
    preflight(str(path), ["train.batch_size=8", "train.num_workers=2"])
    with pytest.raises(ConfigError, match=r"changed: train.batch_size\)"):
        preflight(str(path), ["train.batch_size=4"])


def test_more_rounds_may_be_added_to_a_run(saved_run):
    path, _ = saved_run
    preflight(str(path), ["rounds=4"])  # finished rounds stay valid; new ones are added


@pytest.mark.parametrize("field, stage", [
    ("seed", "data"), ("tasks.0.n_seed", "data"), ("train.lr", "train"),
    ("student.model", "train"), ("student.max_tokens", "predict"),
    ("student.lora", "train"), ("student.lora.rank", "train"),
    ("teacher.temperature", "augment"), ("teacher.api.base_url", "augment"),
    ("tasks.0.n_test", "predict"), ("tasks.0.student_sampling.max_tokens", "predict"),
    ("tasks.0.teacher_sampling.top_p", "augment"), ("prompts.arithmetic.student", "train"),
    ("prompts.arithmetic.teacher", "augment"),
    ("something.new", "data"),  # unknown to the mapping: redo everything, never too little
])
def test_first_affected_stage_of_each_field(field, stage):
    assert first_affected_stage(field) == stage


def test_declaring_a_setting_as_a_stage_input_is_all_rerun_planning_needs(saved_run,
                                                                          monkeypatch):
    path, _ = saved_run
    change = ["teacher.n_per_error=5"]
    assert preflight(str(path), change, rerun_affected=True).rerun == {"arithmetic": "augment"}
    # The train stage now declares it (as a strategy that trains on teacher rows might):
    from engine.stages import STAGE_INPUTS

    monkeypatch.setitem(STAGE_INPUTS, "train", [*STAGE_INPUTS["train"], "teacher.n_per_error"])
    assert preflight(str(path), change, rerun_affected=True).rerun == {"arithmetic": "train"}


def test_an_edited_prompt_template_is_a_changed_input(tmp_path, saved_run):
    path, _ = saved_run
    prompts = tmp_path / "math.yaml"
    original = (Path(__file__).parents[2] / "prompts" / "llm2llm" / "math.yaml").read_text()
    prompts.write_text(original)
    # Point the saved run at a copy of the built-in prompts (same content: same hashes)...
    config = yaml.safe_load(path.read_text())
    config["tasks"][0]["prompts"] = str(prompts)
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"changed: tasks.0.prompts\)"):
        preflight(str(path), [])
    prepared = preflight(str(path), [], rerun_affected=True)
    save_run_record(prepared.cfg, prepared.student_model, prepared.teacher_model)
    # ...then edit only the teacher's template: augment is redone, not training.
    prompts.write_text(original.replace("You are a helpful teacher.", "You are a teacher."))
    with pytest.raises(ConfigError, match=r"changed: prompts.arithmetic.teacher\)"):
        preflight(str(path), [])
    assert preflight(str(path), [], rerun_affected=True).rerun == {"arithmetic": "augment"}


def test_changed_config_names_the_flag_that_reruns_the_affected_stages(saved_run):
    path, _ = saved_run
    with pytest.raises(ConfigError, match="--rerun-affected"):
        preflight(str(path), ["teacher.temperature=0.1"])
    prepared = preflight(str(path), ["teacher.temperature=0.1"], rerun_affected=True)
    assert prepared.rerun == {"arithmetic": "augment"}


def test_rerun_affected_moves_the_affected_stages_aside_and_keeps_the_rest(tmp_path):
    from engine.storage import RunStorage

    store = RunStorage(tmp_path / "run")
    for r in (0, 1):
        for stage in ("data", "train", "predict", "mine", "augment"):
            d = store.stage_dir("arithmetic", r, stage)
            store.begin_stage(d)
            store.finish_stage(d, stage)
        store.write_json(f"{store.round_dir('arithmetic', r)}/metrics.json", {"round": r})
    moved_to = Path(store.supersede("arithmetic", "predict"))
    kept = sorted(p.name for p in Path(store.round_dir("arithmetic", 0)).iterdir())
    assert kept == ["data", "train"]
    assert not Path(store.round_dir("arithmetic", 1)).exists()
    # Nothing is deleted: the superseded stages are kept, under the time of the re-run.
    assert moved_to.parent.name == "superseded" and moved_to.parent.parent == tmp_path / "run"
    assert sorted(p.name for p in (moved_to / "arithmetic" / "round_0").iterdir()) == [
        "augment", "metrics.json", "mine", "predict"]
    assert (moved_to / "arithmetic" / "round_1" / "train" / "MANIFEST.json").is_file()


def test_cli_check_shows_what_rerun_affected_would_redo(saved_run, capsys):
    from engine.cli import main

    path, _ = saved_run
    assert main(["check", str(path), "train.lr=0.1"]) == 2
    assert "--rerun-affected" in capsys.readouterr().err
    assert main(["check", str(path), "--rerun-affected", "train.lr=0.1"]) == 0
    assert "arithmetic: would redo round 0 from train on" in capsys.readouterr().out


def test_after_supersede_the_loop_redoes_only_the_affected_stages(tmp_path):
    from tests.unit.test_driver import make_loop

    loop, *_ = make_loop(tmp_path)
    list(loop.run())
    loop.store.supersede("arithmetic", "augment")  # as a teacher setting change does
    again, gen_s, gen_t, trainer = make_loop(tmp_path)
    list(again.run())
    # Round 0's train and predict are loaded; its augment and all of round 1 are redone.
    assert [c[0] for c in gen_t.calls] == ["augment", "check"]
    assert len(trainer.calls) == 1 and len(gen_s.calls) == 1  # round 1 only


def test_run_dir_that_cannot_be_opened_is_a_config_error(saved_run):
    path, _ = saved_run
    with pytest.raises(ConfigError, match=r"run_dir 'foo://bucket/run': cannot open it .*s3://"):
        preflight(str(path), ["run_dir=foo://bucket/run"])


def test_the_raylet_worker_count_warning_is_kept_off_the_console_and_nothing_else(monkeypatch):
    from ray._private import worker

    from engine.job import quiet_worker_count_warnings

    printed = []
    monkeypatch.setattr(worker, "print_to_stdstream",
                        lambda data, ignore_prefix: printed.append(data["lines"]))
    quiet_worker_count_warnings()
    quiet_worker_count_warnings()  # once only, however often a process starts Ray
    warning = ("WARNING: 24 PYTHON worker processes have been started on node: ab12 with "
               "address: 192.0.2.2, which is 12x the maximum expected startup concurrency (2).")
    killed = "A worker died or was killed while executing a task by an unexpected system error."
    worker.print_to_stdstream({"lines": [warning], "pid": "raylet"}, ignore_prefix=False)
    worker.print_to_stdstream({"lines": [killed, warning], "pid": "raylet"}, ignore_prefix=False)
    assert printed == [[killed]]


def test_a_run_dir_another_live_run_uses_is_refused_and_a_dead_one_s_is_taken(tmp_path):
    """Issue 30: two runs on one run_dir clear each other's stage files."""
    import json
    import socket
    import subprocess
    import time

    from engine.errors import ConfigError
    from engine.job import claim_run_dir
    from engine.storage import STALE_AFTER_S, RunStorage

    store = RunStorage(str(tmp_path))
    claim = lambda: claim_run_dir(store, str(tmp_path), exit_wait_s=0.2)  # noqa: E731
    beat = lambda **kw: (tmp_path / "HEARTBEAT.json").write_text(json.dumps(  # noqa: E731
        {"time": time.time(), "host": socket.gethostname(), "pid": os.getpid(),
         "finished": False, **kw}))
    beat()  # this very process: alive, beating now
    with pytest.raises(ConfigError, match=f"run_dir '{tmp_path}' is in use by another run "
                                          rf"\(process {os.getpid()} on .*\); wait for it"):
        claim()
    beat(host="another-node")  # elsewhere: only the heartbeat's age tells
    with pytest.raises(ConfigError, match="on another-node"):
        claim()
    dead, zombie = subprocess.Popen(["true"]), subprocess.Popen(["true"])
    dead.wait()
    time.sleep(0.3)  # the zombie has exited; nobody has reaped it (as a container's init may not)
    for taken in ({"pid": dead.pid}, {"pid": zombie.pid}, {"finished": True},
                  {"host": "another-node", "time": time.time() - STALE_AFTER_S - 1}):
        beat(**taken)
        claim()  # a killed run, one exiting, a finished one, a stale one
        assert json.loads((tmp_path / "HEARTBEAT.json").read_text())["pid"] == os.getpid()
    zombie.wait()
    exiting = subprocess.Popen(["sleep", "0.5"])  # a killed job's driver, going down
    beat(pid=exiting.pid)
    claim_run_dir(store, str(tmp_path), exit_wait_s=10)
    exiting.wait()


@pytest.mark.parametrize("train_rows, test_rows, extra, message", [
    (0, 8, "", r"tasks.news: no seed rows \(.*train.jsonl has none\); give training rows"),
    (6, 8, ", n_seed: 10", r"tasks.news: n_seed is 10 but .*train.jsonl gives only 6 row"),
    (12, 0, "", r"tasks.news: no test rows \(.*test.jsonl gives none"),
])
def test_splits_a_run_cannot_use_are_refused_naming_the_file(tmp_path, train_rows, test_rows,
                                                             extra, message):
    """Issue 30: an empty train or test file, or n_seed beyond the data, passed silently
    (the run failed after Ray started, or scored nothing every round)."""
    import json

    for split, n in (("train", train_rows), ("test", test_rows)):
        (tmp_path / f"{split}.jsonl").write_text("".join(
            json.dumps({"text": f"item {k} of the {split} set", "label": ["a", "b"][k % 2]})
            + "\n" for k in range(n)))
    path = tmp_path / "job.yaml"
    path.write_text(f"run_dir: {tmp_path / 'run'}\ntrain: {{num_workers: 1}}\n"
                    f"tasks: [{{name: news, type: classification, labels: [a, b], "
                    f"fields: {{text: text, label: label}}, "
                    f"data: {{train: {tmp_path / 'train.jsonl'}, test: {tmp_path / 'test.jsonl'}}}"
                    f"{extra}}}]\n")
    with pytest.raises(ConfigError, match=message):
        preflight(str(path), [], resolve_models=False)


def test_a_second_run_on_a_run_dir_is_refused_at_once_naming_the_first(tmp_path):
    """Issue 30, through the command: a run's job process and its driver (here two stand-in
    processes holding a fresh heartbeat) hold the run_dir; `llm2llm run` on it is refused
    at once, before Ray starts, naming them. SIGKILL the job and its driver goes down after
    it; the run_dir is then taken over."""
    import json
    import signal
    import socket
    import subprocess
    import sys
    import time

    from engine.job import claim_run_dir
    from engine.storage import RunStorage

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    job, driver = (subprocess.Popen(["sleep", "300"]) for _ in range(2))
    (run_dir / "HEARTBEAT.json").write_text(json.dumps(
        {"time": time.time(), "host": socket.gethostname(), "pid": driver.pid,
         "job_pid": job.pid, "started": time.time() - 60, "finished": False}))
    config = tmp_path / "job.yaml"
    config.write_text("tasks: [{name: arithmetic, n_seed: 4}]\nrounds: 1\n")

    def cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
        start = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                             text=True, cwd=Path(__file__).resolve().parents[2], timeout=120)
        return out, time.monotonic() - start

    try:
        # the command's own start (imports, config) as the machine runs it now: a busy
        # machine takes longer to start, not to refuse
        checked, started_in = cli("check", str(config))
        assert checked.returncode == 0, checked.stderr
        out, took = cli("run", str(config), f"run_dir={run_dir}")
        assert out.returncode == 2, out.stderr
        assert (f"is in use by another run (job process {job.pid}, driver process {driver.pid} "
                f"on {socket.gethostname()}, started ") in out.stderr
        assert "Traceback" not in out.stderr and not (run_dir / "config.yaml").exists()
        assert took - started_in < 20  # not the 30 s a dying run's driver gets
        job.send_signal(signal.SIGKILL)  # the job is killed ...
        job.wait()
        driver.terminate()  # ... and its driver goes down with its Ray instance
        claim_run_dir(RunStorage(str(run_dir)), str(run_dir), exit_wait_s=10)
        assert json.loads((run_dir / "HEARTBEAT.json").read_text())["pid"] == os.getpid()
    finally:
        for p in (job, driver):
            p.kill()
            p.wait()
