"""Bad input: one clear message, a non-zero exit, before any work starts or anything is written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_cli(tmp_path, config: str, *overrides):
    path = tmp_path / "job.yaml"
    path.write_text(config)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "engine.cli", "run", str(path), f"run_dir={run_dir}", *overrides]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    return out, run_dir


def gsm8k_files(tmp_path, lines):
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(lines) + "\n")
    return f"tasks: [{{name: gsm8k, data: {{train: {data}, test: {data}}}}}]\n"


TREC = ROOT.parent / "shared" / "data" / "trec"
GOOD = json.dumps({"question": "q", "answer": "#### 1"})


@pytest.mark.parametrize("config, overrides, message", [
    ("tasks: [{name: arithmetic}]\ntrain: {lrr: 1}\n", [], "train.lrr: unknown key"),
    ("tasks: [{name: arithmetic}]\n", ["teacher.nope=1"], "teacher.nope: unknown key"),
    ("tasks: [{name: mnist}]\n", [], "tasks.mnist: unknown task"),
    ("tasks: [{name: gsm8k, data: {train: /no/such.jsonl, test: /no/such.jsonl}}]\n", [],
     "data file '/no/such.jsonl' does not exist"),
    ("tasks: [{name: arithmetic}]\n", ["student.model=/no/such/model"],
     "model path '/no/such/model' does not exist"),
    ("tasks: [{name: arithmetic, n_seed: 1}]\n", ["train.num_workers=2"],
     "1 seed row(s) cannot be split over 2 train workers"),
    ("tasks: [{name: arithmetic}]\nteacher: {api: {base_url: http://127.0.0.1:1/v1, "
     "api_key_env: LLM2LLM_UNSET_KEY_VAR}}\n", [],
     "environment variable LLM2LLM_UNSET_KEY_VAR is not set"),
    ("tasks: [{name: arithmetic}]\nteacher: {api: {base_url: api.example.com}}\n", [],
     "base_url must start with http:// or https://"),
    ("tasks: [{name: arithmetic}]\nteacher: {constrain_format: true, "
     "api: {base_url: http://127.0.0.1:1/v1}}\n", [], "constrain_format needs a vLLM teacher"),
    ("tasks: [{name: arithmetic, n_seed: 0}]\n", [],
     "n_seed is 0 (no labelled seed) but llm2llm train(s) on labelled seed rows"),
    ("tasks: [{name: arithmetic}]\nstrategy: {name: s3}\n", [],
     "strategy s3 needs a classification task"),
    (f"tasks: [{{name: trec, data: {{train: {TREC}/train.jsonl, test: {TREC}/test.jsonl}}}}]\n"
     "strategy: {name: s3}\nrounds: 1\n", [], "set rounds >= 2"),
    ("tasks: [{name: arithmetic}]\n", ["student.kind=sequence_classification"],
     "type arithmetic needs a generating student; student.kind sequence_classification is "
     "for classification tasks"),
])
def test_bad_config_fails_before_work(tmp_path, config, overrides, message):
    out, run_dir = run_cli(tmp_path, config, *overrides)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not run_dir.exists()  # nothing written, so nothing looks complete


def test_malformed_jsonl_line_is_named(tmp_path):
    config = gsm8k_files(tmp_path, [GOOD, GOOD, "{not json"])
    out, run_dir = run_cli(tmp_path, config)
    assert out.returncode == 2
    assert "train.jsonl:3: malformed JSON line" in out.stderr
    assert not run_dir.exists()


def test_several_problems_reported_together(tmp_path):
    out, _ = run_cli(tmp_path, "tasks: [{name: mnist}]\n", "student.model=./gone")
    assert out.returncode == 2
    assert "tasks.mnist: unknown task" in out.stderr
    assert "model path './gone' does not exist" in out.stderr


def test_check_command_accepts_a_good_config(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("tasks: [{name: arithmetic, n_seed: 4}]\nrounds: 1\n")
    out = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(path),
                          f"run_dir={tmp_path / 'r'}"], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "config OK" in out.stdout


def test_rays_out_of_memory_kill_is_named_with_what_to_change():
    from engine.errors import root_cause

    # as Ray Train reported it when three trainings side by side filled this machine
    message = ("Error in control loop iteration: 5 worker(s) were killed due to the node "
               "running low on memory. Memory on the node (IP: 192.0.2.2, ID: b1b228) was "
               "22.60GB used / 23.54GB limit (0.959860)\nOOM kill reason: Memory usage "
               "24311115776B exceeded threshold of 24012677120B (95.0% of 25276502016B limit)\n"
               "Refer to the documentation on how to address the out of memory issue: https://"
               "docs.ray.io/en/latest/ray-observability/user-guides/debug-apps/debug-memory.html.")
    cause = root_cause(RuntimeError(message))
    assert cause.startswith("Ray's out-of-memory killer stopped a worker: the node ran out of "
                            "memory (22.60GB of 23.54GB in use)")
    assert "parallel: 1" in cause and "train.memory_per_worker" in cause


def test_ctrl_c_ends_with_a_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    """Ctrl-C in a compare printed Ray's KeyboardInterrupt traceback; the stages that
    finished are kept, which is what a user needs to hear."""
    import engine.job
    from engine.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.job, "run_job", interrupted)
    assert main(["compare", "job.yaml", "--strategies", "llm2llm,random"]) == 130
    err = capsys.readouterr().err
    assert err == ("llm2llm: interrupted (the finished stages are kept: run the same command "
                   "to resume)\n")


def test_compare_flags_override_the_configs_section_and_only_when_given(tmp_path, monkeypatch):
    """`--seeds` used to be sent as 0,1,2 whether given or not, so a config's compare.seeds
    (the demo's [0]) was silently replaced; and --strategies was required even where the
    config lists them."""
    import engine.job
    from engine.cli import main

    config = tmp_path / "job.yaml"
    config.write_text(f"run_dir: {tmp_path}/run\ntasks: [{{name: arithmetic}}]\n"
                      "compare: {strategies: [llm2llm, seed_only], seeds: [0]}\n")
    seen = []
    monkeypatch.setattr(engine.job, "run_job", lambda path, overrides, *a: seen.append(overrides))
    assert main(["compare", str(config)]) == 0
    assert main(["compare", str(config), "--seeds", "3,4", "rounds=2"]) == 0
    assert seen == [[], ["rounds=2", "compare.seeds=[3,4]"]]


def test_compare_without_strategies_anywhere_names_the_flag(tmp_path, monkeypatch, capsys):
    import engine.job
    from engine.cli import main

    config = tmp_path / "job.yaml"
    config.write_text(f"run_dir: {tmp_path}/run\ntasks: [{{name: arithmetic}}]\n")
    monkeypatch.setattr(engine.job, "run_job", lambda *a: pytest.fail("a plain run started"))
    assert main(["compare", str(config), "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert "has no compare section" in err and "--strategies llm2llm,random,seed_only" in err
