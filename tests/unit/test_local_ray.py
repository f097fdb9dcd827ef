"""A local Ray instance started by the engine keeps its workers at the driver's priority."""

import os

import ray

from engine.config import load_config
from engine.job import start_ray
from engine.local_ray import LOCAL_RAY_ENV


def config(tmp_path, *overrides):
    return load_config(None, ["tasks=[{name: arithmetic}]", f"run_dir={tmp_path}", *overrides])


def unset(monkeypatch, name: str) -> None:
    """Unset `name` for this test; whatever the code under test sets is undone after it."""
    monkeypatch.setenv(name, "")  # records the value before, so teardown restores it
    monkeypatch.delenv(name)


def captured_init(monkeypatch) -> list[dict]:
    calls = []
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(
        {**kwargs, "env": {k: os.environ.get(k) for k in LOCAL_RAY_ENV}}))
    return calls


def test_a_local_instance_runs_its_workers_unniced(monkeypatch, tmp_path):
    unset(monkeypatch, "RAY_worker_niceness")
    unset(monkeypatch, "RAY_ADDRESS")
    calls = captured_init(monkeypatch)
    start_ray(config(tmp_path))
    assert calls[0]["address"] == "local"
    assert calls[0]["env"] == {"RAY_worker_niceness": "0"}  # set before Ray starts its processes


def test_the_users_own_niceness_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_worker_niceness", "10")
    unset(monkeypatch, "RAY_ADDRESS")
    calls = captured_init(monkeypatch)
    start_ray(config(tmp_path))
    assert calls[0]["env"] == {"RAY_worker_niceness": "10"}


def test_joining_a_cluster_leaves_its_settings_alone(monkeypatch, tmp_path):
    unset(monkeypatch, "RAY_worker_niceness")
    calls = captured_init(monkeypatch)
    start_ray(config(tmp_path, "ray.address=ray://head:10001"))
    assert calls[0]["address"] == "ray://head:10001"
    assert calls[0]["env"] == {"RAY_worker_niceness": None}
