import pytest

from engine.errors import ConfigError
from engine.job import preflight, save_run_config


def test_run_dir_with_a_different_config_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("engine.job.resolve_model", lambda name: f"/models/{name}")
    path = tmp_path / "job.yaml"
    path.write_text(f"run_dir: {tmp_path / 'run'}\ntasks: [{{name: arithmetic, n_seed: 4}}]\n")
    prepared = preflight(str(path), [])
    save_run_config(prepared)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "versions:" in saved and "seed: 0" in saved
    assert preflight(str(path), []).cfg == prepared.cfg  # same config: resumable
    with pytest.raises(ConfigError, match=r"changed: tasks.0.n_seed, train.lr"):
        preflight(str(path), ["train.lr=0.1", "tasks.0.n_seed=5"])
