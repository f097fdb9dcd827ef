"""Behaviour held across refactors: compares on small configs with fake backends write the same
stage tables, manifests' facts and metrics as the snapshot in golden/compare_digests.json,
which was written by the engine before strategies became plans and the round loop was split
into its stages (issue 28).

A deliberate change of behaviour regenerates the snapshot:
    UPDATE_GOLDEN=1 python -m pytest tests/unit/test_unchanged_outputs.py
and says so in its commit.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine.config import RunConfig
from engine.driver import RoundLoop
from engine.tasks import build_task
from tests.fakes import FakeGenerator, FakeTrainer
from tests.unit import test_s3
from tests.unit.test_driver import teacher as math_teacher
from tests.unit.test_strategies import knowing_student

GOLDEN = Path(__file__).parent / "golden" / "compare_digests.json"
# what a run's clock decides, not its logic
VOLATILE = {"seconds", "stage_seconds", "started_at", "finished_at", "timings", "wall_s",
            "elapsed_s",
            # a stage's inputs as a hash (kept since 2026-12-06, after the golden digests):
            # what the stage read, not what it wrote
            "fingerprint"}
# metrics added after the snapshot was written, left out so that everything else is still
# held to what the engine wrote before the refactor: the guard rows' fix rate (2026-12-07)
ADDED_SINCE_SNAPSHOT = {"guard_fix_rate", "guard_fix_rate_mean"}


def _scrub(value):
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in sorted(value.items())
                if k not in VOLATILE | ADDED_SINCE_SNAPSHOT}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _digest(value, root: Path) -> str:
    # a path under the test's temporary folder (a continued student's base) is kept relative
    text = json.dumps(_scrub(value), sort_keys=True, default=str).replace(str(root), "<tmp>")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_digests(run_dir: Path) -> dict[str, str]:
    """file (relative to run_dir) -> digest of its rows in order, or of its JSON facts."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = str(path.relative_to(run_dir))
        if path.suffix == ".parquet":
            out[rel] = _digest(pq.read_table(path).to_pylist(), run_dir.parent)
        elif path.name in ("metrics.json", "MANIFEST.json"):
            out[rel] = _digest(json.loads(path.read_text()), run_dir.parent)
        elif path.is_file() and path.parent.name == "model":  # a fake student's marker files
            out[rel] = "present"
    return out


def _run(cfg: RunConfig, student_for, teacher) -> None:
    """student_for(task) -> the fake student's answer function."""
    tasks = [build_task(t, cfg.seed) for t in cfg.tasks]
    gen_s = FakeGenerator(student_for(tasks[0]))
    loop = RoundLoop(cfg, tasks, "base", "teacher", gen_s, FakeGenerator(teacher),
                     FakeTrainer(), log=lambda m: None)
    for _ in loop.run():
        pass


def math_student(task):
    """knowing_student, answering "?" to rows it was not built with (synthetic rows, which
    llm2llm+mine_all mines too)."""
    knows = knowing_student(task)

    def respond(messages):
        try:
            return knows(messages)
        except StopIteration:
            return "?"
    return respond


def math_compare(tmp_path: Path) -> Path:
    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / "math"), "rounds": 3,
        "compare": {"strategies": ["llm2llm", "random", "mixed", "seed_only", "zerogen",
                                   "llm2llm+continue", "llm2llm+mine_all", "llm2llm+one_shot"],
                    "seeds": [0, 1]},
        "stop": {"when_nothing_added": False},
        "tasks": [{"name": "arithmetic", "n_seed": 12, "n_test": 6}]})
    _run(cfg, math_student, math_teacher)
    return tmp_path / "math"


def classification_compare(tmp_path: Path, name: str, strategies: list[str],
                           n_seed: int) -> Path:
    paths = test_s3.write_task_files(tmp_path)
    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / name), "rounds": 3,
        "strategy": {"rationales_per_label": 3, "seed_rows_per_label": 6},
        "teacher": {"n_per_error": 2},
        "compare": {"strategies": strategies, "seeds": [0, 1]},
        "tasks": [test_s3.task_config(paths, n_seed=n_seed)]})
    _run(cfg, lambda task: test_s3.student, test_s3.teacher)
    return tmp_path / name


def all_digests(tmp_path: Path) -> dict[str, dict[str, str]]:
    return {
        "math": run_digests(math_compare(tmp_path)),
        "synthesized": run_digests(classification_compare(
            tmp_path, "synthesized", ["s3", "zerogen"], n_seed=0)),
        "labelled": run_digests(classification_compare(
            tmp_path, "labelled", ["llm2llm", "llm2llm+label_mix", "llm2llm+mine_validation",
                                   "random", "mixed+share=0.25", "s3"], n_seed=8)),
    }


def test_compares_write_what_they_wrote_before_the_refactor(tmp_path):
    got = all_digests(tmp_path)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        pytest.skip("snapshot written")
    want = json.loads(GOLDEN.read_text())
    for run in want:
        missing = sorted(set(want[run]) - set(got[run]))
        extra = sorted(set(got[run]) - set(want[run]))
        changed = sorted(k for k in set(want[run]) & set(got[run]) if want[run][k] != got[run][k])
        assert not (missing or extra or changed), (
            f"{run}: files missing {missing[:5]}, new {extra[:5]}, changed {changed[:8]}")
