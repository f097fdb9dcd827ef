import pytest

from engine.config import load_config, parse_override
from engine.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_loads_yaml_with_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "tasks: [{name: arithmetic, n_seed: 8}]\nrounds: 3\n"))
    assert cfg.rounds == 3
    assert cfg.tasks[0].n_seed == 8
    assert cfg.train.zero_stage == 0  # auto, for CPU training


def test_overrides_nested_and_list_items(tmp_path):
    path = write(tmp_path, "tasks: [{name: arithmetic}]\n")
    cfg = load_config(path, ["train.lr=1e-4", "tasks.0.n_seed=5", "teacher.n_per_error=3"])
    assert cfg.train.lr == 1e-4
    assert cfg.tasks[0].n_seed == 5
    assert cfg.teacher.n_per_error == 3


def test_all_problems_reported_at_once_with_paths(tmp_path):
    path = write(tmp_path, "tasks: [{name: arithmetic}]\ntrian: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["train.lr=-1", "train.zero_stage=7", "bogus"])
    text = str(err.value)
    assert "trian: unknown key" in text
    assert "train.lr" in text and "train.zero_stage" in text
    assert "override 'bogus'" in text
    assert len(err.value.problems) == 4


def test_missing_config_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_duplicate_task_names_refused(tmp_path):
    with pytest.raises(ConfigError, match="unique"):
        load_config(write(tmp_path, "tasks: [{name: a, type: math}, {name: a, type: math}]\n"))


def test_parse_override_values_are_yaml():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=null") == (["a"], None)
    with pytest.raises(ValueError):
        parse_override("a..b=1")


def test_every_setting_is_documented_once_in_its_field():
    from engine.config import describe_settings

    rows = describe_settings()
    undocumented = [path for path, _, _, description in rows if not description]
    assert not undocumented, f"settings without a Field(description=...): {undocumented}"
    paths = [r[0] for r in rows]
    assert "teacher.n_per_error" in paths and "tasks.<i>.teacher_sampling.temperature" in paths


def test_config_command_prints_a_section_and_refuses_an_unknown_one(capsys):
    from engine.cli import main

    assert main(["config", "teacher"]) == 0
    out = capsys.readouterr().out
    assert "teacher.temperature: float = 0.7\n    sampling temperature" in out
    assert "train." not in out
    assert main(["config", "teacher.no_such"]) == 2
    assert "no setting named 'teacher.no_such'" in capsys.readouterr().err


def test_every_example_config_passes_check(monkeypatch, capsys):
    from pathlib import Path

    from engine.cli import main

    root = Path(__file__).resolve().parents[2]
    if not (root.parent / "shared" / "data").is_dir():
        pytest.skip("the example configs read ../shared/data")
    monkeypatch.chdir(root)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # the API example names this variable
    for path in sorted((root / "jobs" / "configs").glob("*.yaml")):
        assert main(["check", str(path), f"run_dir={root / 'runs' / 'check-only'}"]) == 0, path
    assert "meta-llama/Llama-2-7b-hf': a hub name" in capsys.readouterr().out


def test_an_encoder_student_defaults_to_the_bundled_minilm():
    cfg = load_config(None, ["tasks=[{name: trec}]", "student.kind=sequence_classification"])
    assert cfg.student.model == "all-minilm-l6-v2"
    mine = load_config(None, ["tasks=[{name: trec}]", "student.kind=sequence_classification",
                              "student.model=/models/distilbert"])
    assert mine.student.model == "/models/distilbert"  # a model named is kept
    assert load_config(None, ["tasks=[{name: trec}]"]).student.model == "smollm2-135m-instruct"


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "c:\\\\x", "tab\\tname"])
def test_a_task_name_that_would_leave_the_run_dir_is_refused(name):
    """Issue 30: a task name is its units' folder; `../` put stage folders outside run_dir."""
    with pytest.raises(ConfigError, match="cannot name a folder under run_dir; use letters"):
        load_config(None, [f'tasks=[{{name: "{name}", type: math}}]'])
    load_config(None, ["tasks=[{name: my-task.v2, type: math}]"])


def test_auto_training_settings_follow_the_kind_of_training(tmp_path):
    """Issue 32: ZeRO-2 and per-epoch checkpoints cost a CPU round about 90 s of 2 minutes
    (BENCHMARKS.md); `auto` (the default) keeps them for GPU training only, records what it
    chose, and leaves a value the user gave alone."""
    from engine.config import TrainConfig

    cpu, gpu, one_gpu = TrainConfig(), TrainConfig(use_gpu=True), TrainConfig(use_gpu=True,
                                                                              num_workers=1)
    assert (cpu.num_workers, cpu.zero_stage, cpu.checkpoint_every) == (1, 0, "never")
    assert (gpu.num_workers, gpu.zero_stage, gpu.checkpoint_every) == (2, 2, "epoch")
    assert one_gpu.zero_stage == 0  # nothing to shard over
    assert cpu.chosen == {"num_workers": 1, "zero_stage": 0, "checkpoint_every": "never"}
    assert TrainConfig(use_gpu=True, batch_size=3).num_workers == 1  # 3 rows do not split
    given = TrainConfig(num_workers=2, zero_stage=3, checkpoint_every=10)
    assert (given.num_workers, given.zero_stage, given.checkpoint_every, given.chosen) == \
        (2, 3, 10, {})
    # the run record keeps the value, so a resume compares like with like
    cfg = load_config(write(tmp_path, "tasks: [{name: arithmetic}]\n"))
    saved = cfg.model_dump(mode="json")["train"]
    assert (saved["num_workers"], saved["zero_stage"], saved["checkpoint_every"]) == \
        (1, 0, "never")
    assert load_config(write(tmp_path, "tasks: [{name: arithmetic}]\n"),
                       ["train.zero_stage=auto"]).train.zero_stage == 0


def test_the_batch_is_split_over_the_workers(tmp_path):
    """train.batch_size is the rows of a step over all workers, so the worker count (auto:
    the machine's) changes the speed, not the arithmetic; a batch that does not split evenly
    is refused with the fix."""
    from engine.config import TrainConfig

    assert TrainConfig(batch_size=8).worker_batch == 8  # auto on CPU: one worker
    assert TrainConfig(batch_size=8, num_workers=2).worker_batch == 4
    assert TrainConfig(batch_size=8, use_gpu=True).worker_batch == 4  # auto on GPU: two
    with pytest.raises(ConfigError, match="train.batch_size 6 does not split evenly over 4 "
                                          "workers: set train.batch_size to a multiple of "
                                          "train.num_workers"):
        load_config(write(tmp_path, "tasks: [{name: arithmetic}]\n"),
                    ["train.num_workers=4", "train.batch_size=6"])
