"""Experiment tracking (engine/tracking.py) with MLflow's real client on a local SQLite store,
over a hand-made run directory: params, each round's metrics once (across a resume and a lost
ids file), the report as an artifact. A real `mlflow server` is in
tests/integration/test_two_rounds.py."""

import socket

import pytest

from engine.config import RunConfig
from engine.errors import ConfigError
from engine.tracking import MlflowTracker, flatten, round_metrics
from tests.unit.test_export import make_run


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory) -> str:
    """One SQLite store for the module: MLflow builds its schema (~50 migrations) once."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def config(run_dir: str, **tracking) -> RunConfig:
    return RunConfig(run_dir=run_dir, rounds=2, tasks=[{"name": "arithmetic", "n_seed": 2}],
                     tracking={"backend": "mlflow", "experiment": run_dir, **tracking})


def history(tracker: MlflowTracker, unit: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in tracker.client.get_metric_history(
        tracker.run_ids[unit], key))


def test_params_and_metrics_are_flattened():
    assert flatten({"train": {"lr": 0.001, "epochs": 2}, "tasks": [{"name": "x"}]}) == {
        "train.lr": "0.001", "train.epochs": "2", "tasks": '[{"name": "x"}]'}
    assert round_metrics({"round": 1, "test_accuracy": 0.5, "strategy": "llm2llm",
                          "stopped": True, "fix_rate": None, "train": {"steps": 6},
                          "rejected_by_reason": {"duplicate": 2},
                          "test_answers": {"(none)": 1, "very good": 2, "a/..": 3,
                                           "x" * 300: 4}}) == {
        "test_accuracy": 0.5, "train.steps": 6.0, "rejected_by_reason.duplicate": 2.0,
        "test_answers._none_": 1.0, "test_answers.very good": 2.0, "test_answers.a_": 3.0,
        "test_answers." + "x" * 237: 4.0}


def test_each_round_is_logged_once_across_resumes(tmp_path, store_uri):
    run_dir, store = make_run(tmp_path)
    unit = "arithmetic"
    round_1 = f"{store.round_dir(unit, 1)}/metrics.json"
    saved = store.read_text(round_1)
    store.fs.delete_file(round_1)  # killed before round 1 finished
    cfg = config(run_dir, uri=store_uri)
    tracker = MlflowTracker(cfg, log=pytest.fail)
    tracker.sync()
    assert history(tracker, unit, "test_accuracy") == [(0, 0.25)]
    assert history(tracker, unit, "rejected_by_reason.duplicate") == [(0, 2.0)]
    run = tracker.client.get_run(tracker.run_ids[unit])
    assert run.data.params["train.lr"] == str(cfg.train.lr)
    assert run.data.tags["llm2llm.unit"] == unit and run.info.status == "RUNNING"

    # the resumed job: a new tracker finds the run and logs round 1 only; with the ids file
    # lost, the run is found again by its tags
    store.write_text(round_1, saved)
    again = MlflowTracker(cfg, log=pytest.fail)
    again.sync()
    store.fs.delete_file(store.path("tracking.json"))
    third = MlflowTracker(cfg, log=pytest.fail)
    third.sync()
    assert third.run_ids == tracker.run_ids
    assert history(third, unit, "test_accuracy") == [(0, 0.25), (1, 0.5)]
    assert history(third, unit, "round") == [(0, 0.0), (1, 1.0)]
    # a label key MLflow would refuse as a name ("(none)") does not cost the round's batch
    assert history(third, unit, "test_answers._none_") == [(1, 1.0)]

    store.write_text(store.path("report.html"), "<html>report</html>")
    third.finish()
    run = third.client.get_run(third.run_ids[unit])
    assert run.info.status == "FINISHED"
    assert [a.path for a in third.client.list_artifacts(run.info.run_id)] == ["report.html"]
    # with a database store, artifacts go beside the run, not into the current directory
    assert list((tmp_path / "run" / "mlflow-artifacts").rglob("report.html"))
    assert len(third.client.search_runs([third.experiment_id])) == 1


def test_a_compare_gets_a_run_per_unit_tagged_with_strategy_and_seed(tmp_path, store_uri):
    units = ("arithmetic/llm2llm/seed_0", "arithmetic/seed_only/seed_0")
    run_dir, _ = make_run(tmp_path, units=units)
    tracker = MlflowTracker(config(run_dir, uri=store_uri), log=pytest.fail)
    tracker.sync()
    tags = {u: tracker.client.get_run(tracker.run_ids[u]).data.tags for u in units}
    assert [(t["strategy"], t["train_seed"]) for t in tags.values()] == [
        ("llm2llm", "0"), ("seed_only", "0")]


def test_a_server_that_does_not_answer_stops_the_job_at_once(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run_dir, _ = make_run(tmp_path)
    with pytest.raises(ConfigError, match=r"no MLflow server answers there .*tracking.backend: "
                                          r"none"):
        MlflowTracker(config(run_dir, uri=f"http://127.0.0.1:{port}"))


def test_a_failure_while_logging_is_a_warning(tmp_path, store_uri):
    run_dir, _ = make_run(tmp_path)
    warnings = []
    tracker = MlflowTracker(config(run_dir, uri=store_uri), log=warnings.append)

    def broken(*args, **kwargs):
        raise ConnectionError("server gone")

    tracker.client.log_batch = broken
    tracker.sync()
    assert len(warnings) == 1 and "server gone" in warnings[0]


def test_the_default_store_is_a_sqlite_file_in_the_run_dir_and_remote_run_dirs_need_a_uri(
        tmp_path):
    cfg = config(str(tmp_path / "new" / "run"))  # a first run: its run_dir does not exist yet
    assert cfg.tracking.resolved_uri(cfg.run_dir) == \
        f"sqlite:///{tmp_path / 'new' / 'run' / 'mlflow.db'}"
    assert cfg.tracking.artifact_location(cfg.run_dir) == (
        tmp_path / "new" / "run" / "mlflow-artifacts").as_uri()
    tracker = MlflowTracker(cfg, log=pytest.fail)
    assert tracker.client.get_experiment(tracker.experiment_id).name == cfg.run_dir
    assert (tmp_path / "new" / "run" / "mlflow.db").is_file()
    with pytest.raises(ValueError, match="tracking.uri: a run_dir on remote storage"):
        config("s3://bucket/run")
