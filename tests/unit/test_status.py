"""`llm2llm status`: stage states read from a run directory made by the round loop (fakes)."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from engine.status import STALE_AFTER_S, format_status, stage_states
from engine.storage import RunStorage
from tests.unit.test_driver import make_loop

ROOT = Path(__file__).resolve().parents[2]


def finished_run(tmp_path):
    loop, *_ = make_loop(tmp_path)
    for _ in loop.run():
        pass
    run_dir = tmp_path / "run"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"config": loop.cfg.model_dump(mode="json")}))
    return run_dir


def states(rows, r):
    return {k: v for k, v in rows[r].items() if k not in ("task", "round")}


def test_status_of_a_finished_run(tmp_path):
    run_dir = finished_run(tmp_path)
    RunStorage(run_dir).write_heartbeat(finished=True)
    rows, driver = stage_states(run_dir)
    assert [(r["task"], r["round"]) for r in rows] == [("arithmetic", 0), ("arithmetic", 1)]
    assert states(rows, 0) == {"data": "done", "train": "done", "predict": "done",
                               "mine": "done", "augment": "done", "metrics": True,
                               "stopped": ""}
    assert states(rows, 1)["augment"] == "-"  # the last round never augments
    assert driver["finished"]
    assert "finished" in format_status(run_dir).splitlines()[0]


def test_status_tells_running_from_interrupted_and_missing(tmp_path):
    run_dir = finished_run(tmp_path)
    round1 = run_dir / "arithmetic" / "round_1"
    (round1 / "predict" / "MANIFEST.json").unlink()  # predict started, not finished
    shutil.rmtree(round1 / "mine")
    (round1 / "metrics.json").unlink()
    store = RunStorage(run_dir)
    store.write_heartbeat()
    rows, _ = stage_states(run_dir)
    assert states(rows, 1) == {"data": "done", "train": "done", "predict": "running",
                               "mine": "missing", "augment": "-", "metrics": False,
                               "stopped": ""}
    # The driver went quiet: the same stage is now reported as interrupted, with the fix.
    beat = json.loads((run_dir / "HEARTBEAT.json").read_text())
    rows, driver = stage_states(run_dir, now=beat["time"] + STALE_AFTER_S + 1)
    assert states(rows, 1)["predict"] == "interrupted" and not driver["alive"]


def test_status_of_a_folder_that_is_not_a_run(tmp_path):
    out = subprocess.run([sys.executable, "-m", "engine.cli", "status", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2
    assert "not a run directory (no config.yaml)" in out.stderr


def test_status_command_prints_the_table(tmp_path):
    run_dir = finished_run(tmp_path)
    RunStorage(run_dir).write_heartbeat()
    out = subprocess.run([sys.executable, "-m", "engine.cli", "status", str(run_dir)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    # who holds the run_dir (issue 30): the heartbeat's process and host
    assert re.search(rf"running \(driver process {os.getpid()} on {socket.gethostname()}, last "
                     rf"heartbeat \d+s ago; it holds the run_dir\)", out.stdout), out.stdout
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("task"))
    assert lines[header].split() == ["task", "round", "data", "train", "predict", "mine",
                                     "augment", "metrics"]
    assert lines[header + 2].split() == ["arithmetic", "0", "done", "done", "done", "done",
                                         "done", "yes"]
    assert time.time() - RunStorage(run_dir).read_heartbeat()["time"] < 60
