import pytest
import yaml

from engine.errors import ConfigError
from engine.job import preflight, save_run_config


@pytest.fixture
def saved_run(tmp_path, monkeypatch):
    """A job config whose run_dir already holds its saved config; returns (path, prepared)."""
    monkeypatch.setattr("engine.job.resolve_model", lambda name: f"/models/{name}")
    path = tmp_path / "job.yaml"
    path.write_text(f"run_dir: {tmp_path / 'run'}\ntasks: [{{name: arithmetic, n_seed: 4}}]\n")
    prepared = preflight(str(path), [])
    save_run_config(prepared)
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
    saved_path.write_text(yaml.safe_dump(saved))
    preflight(str(path), [])
