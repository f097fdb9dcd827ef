"""What a crash can leave in a run directory, and how it is never read as data: truncated or
zero-filled parts, broken manifests, bit flips in the response cache."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.generation import cache as cache_module
from engine.generation.cache import ResponseCache
from engine.storage import MANIFEST, RESUME_DIR, RunStorage
from tests.unit.test_driver import make_loop


def finished_stage(tmp_path):
    store = RunStorage(tmp_path / "run")
    stage = store.stage_dir("t", 0, "predict")
    store.begin_stage(stage)
    store.write_table(stage, pa.table({"id": ["a", "b"], "output": ["one", "two"]}))
    store.finish_stage(stage, "predict")
    return store, Path(stage)


def test_manifest_records_size_and_checksum_of_every_file(tmp_path):
    store, stage = finished_stage(tmp_path)
    entry = store.read_manifest(stage)["files"]["part-0.parquet"]
    assert entry["bytes"] == (stage / "part-0.parquet").stat().st_size
    assert len(entry["sha256"]) == 64
    assert store.is_complete(str(stage))


def test_zero_filled_part_of_the_right_size_is_not_complete(tmp_path):
    # What a power loss can leave after a rename whose data never reached the disk.
    store, stage = finished_stage(tmp_path)
    part = stage / "part-0.parquet"
    part.write_bytes(b"\0" * part.stat().st_size)
    assert not store.is_complete(str(stage))


@pytest.mark.parametrize("manifest", [
    b'{"stage": "predict", "files": {"part-0.parq',        # truncated mid-write
    b"",                                                   # empty
    b"[1, 2, 3]",                                          # JSON, but not a manifest
    b'{"stage": "predict"}',                               # no file list
    b'{"stage": "predict", "files": {"part-0.parquet": {"bytes": 1}}}',  # wrong size
])
def test_broken_manifest_makes_the_stage_incomplete(tmp_path, manifest):
    store, stage = finished_stage(tmp_path)
    (stage / MANIFEST).write_bytes(manifest)
    assert not store.is_complete(str(stage))


def test_manifest_of_an_older_engine_with_sizes_only_still_counts(tmp_path):
    store, stage = finished_stage(tmp_path)
    size = (stage / "part-0.parquet").stat().st_size
    (stage / MANIFEST).write_text(json.dumps({"stage": "predict",
                                              "files": {"part-0.parquet": size}}))
    assert store.is_complete(str(stage))


def test_begin_stage_keeps_resume_state_and_finish_removes_it(tmp_path):
    store = RunStorage(tmp_path / "run")
    stage = Path(store.stage_dir("t", 0, "train"))
    (stage / RESUME_DIR).mkdir(parents=True)
    (stage / RESUME_DIR / "checkpoint").write_text("state")
    (stage / "part-0.parquet").write_bytes(b"left by a crash")
    (stage / "model").mkdir()
    store.begin_stage(str(stage))
    assert sorted(p.name for p in stage.iterdir()) == [RESUME_DIR]
    store.finish_stage(str(stage), "train")
    assert not (stage / RESUME_DIR).exists()
    assert store.is_complete(str(stage))


@pytest.mark.parametrize("damage", ["truncate", "zero-fill", "manifest"])
def test_damaged_stage_is_redone_and_never_read(tmp_path, damage):
    loop, *_ = make_loop(tmp_path, rounds=1)
    list(loop.run())
    stage = tmp_path / "run" / "arithmetic" / "round_0" / "predict"
    part = stage / "part-0.parquet"
    good = pq.read_table(part)
    if damage == "truncate":
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    elif damage == "zero-fill":
        part.write_bytes(b"\0" * part.stat().st_size)
    else:
        (stage / MANIFEST).write_bytes((stage / MANIFEST).read_bytes()[:20])
    again, gen_s, *_ = make_loop(tmp_path, rounds=1)
    list(again.run())
    assert len(gen_s.calls) == 1  # predict ran again
    assert pq.read_table(part).equals(good)


def test_cache_part_with_a_flipped_byte_is_skipped_not_served(tmp_path):
    # A page checksum catches what Parquet's decoder would read back as a different answer.
    logs = []
    cache = ResponseCache(tmp_path / "cache", log=logs.append)
    cache.add([{"key": "k1", "output": "ANSWER-7f3a9c", "prompt_tokens": 3,
                "completion_tokens": 1}])
    (part,) = map(Path, cache.parts())
    data = bytearray(part.read_bytes())
    at = data.find(b"ANSWER-7f3a9c")
    assert at > 0, "the answer is stored as plain bytes in the page"
    data[at + 7] ^= 0x01  # "7" -> "6"
    part.write_bytes(bytes(data))
    assert cache.lookup(["k1"]) == {}
    assert any(part.name in line for line in logs)


def test_a_run_on_a_filesystem_uri_resumes_and_detects_damage():
    """The same loop on pyarrow's in-memory filesystem (`mock://`, one per process): what
    works on a local disk works on any pyarrow filesystem, object stores included."""
    import pyarrow.fs as pafs

    from engine.config import RunConfig
    from engine.driver import RoundLoop
    from engine.status import stage_states
    from engine.tasks import build_task
    from tests.fakes import FakeGenerator, FakeTrainer
    from tests.unit.test_driver import student, teacher

    run_dir = "mock:///runs/on-a-uri"

    def loop():
        cfg = RunConfig.model_validate({"run_dir": run_dir, "rounds": 2, "tasks": [
            {"name": "arithmetic", "n_seed": 10, "n_test": 6}]})
        gens = FakeGenerator(student), FakeGenerator(teacher), FakeTrainer()
        return RoundLoop(cfg, [build_task(t, cfg.seed) for t in cfg.tasks], "base", "teacher",
                         *gens, log=lambda m: None), gens

    first, _ = loop()
    history = [m for ms in first.run() for m in ms]
    store = first.store
    assert not isinstance(store.fs, pafs.LocalFileSystem)
    assert store.location(store.stage_dir("arithmetic", 0, "train")).startswith("mock://")
    store.write_text(store.path("config.yaml"), "config: {rounds: 2, tasks: [{name: arithmetic}]}")
    rows, _ = stage_states(run_dir)
    assert [r["train"] for r in rows] == ["done", "done"]

    # Damage one part: only that stage, and what depends on nothing else, is redone.
    part = f"{store.stage_dir('arithmetic', 1, 'mine')}/part-0.parquet"
    with store.fs.open_output_stream(part) as f:
        f.write(b"\0" * 64)
    again, (gen_s, gen_t, trainer) = loop()
    assert [m for ms in again.run() for m in ms][-1]["n_errors"] == history[-1]["n_errors"]
    assert not gen_s.calls and not gen_t.calls and not trainer.calls  # mine is pure

    moved_to = store.supersede("arithmetic", "augment")
    assert store.exists(f"{moved_to}/arithmetic/round_1/train/MANIFEST.json")
    assert not store.exists(store.round_dir("arithmetic", 1))


def cached(keys, tag="") -> list[dict]:
    return [{"key": k, "output": f"answer {k}{tag}", "prompt_tokens": 1,
             "completion_tokens": 2} for k in keys]


def test_many_cache_parts_are_compacted_into_one_and_answer_the_same(tmp_path):
    logs = []
    cache = ResponseCache(tmp_path / "cache", log=logs.append, compact_at=4)
    for i in range(6):  # overlapping batches, as re-runs and side-by-side seeds write them
        cache.add(cached([f"k{j}" for j in range(i, i + 3)]))
    (tmp_path / "cache" / "part-broken.parquet").write_bytes(b"PAR1 not really")
    keys = [f"k{j}" for j in range(10)]
    before = ResponseCache(tmp_path / "cache", compact_at=1000).lookup(keys)
    assert cache.lookup(keys) == before and sorted(before) == [f"k{j}" for j in range(8)]
    parts = sorted(Path(p).name for p in cache.parts())
    assert len(parts) == 2 and "part-broken.parquet" in parts  # one merged; the bad one left
    merged = pq.read_table(next(p for p in cache.parts() if "broken" not in p))
    assert sorted(merged.column("key").to_pylist()) == [f"k{j}" for j in range(8)]  # once each
    assert any("compacted 6 parts into one (8 responses)" in line for line in logs)
    assert cache.lookup(keys) == before  # and again, with nothing left to compact


def test_compaction_merges_into_bounded_parts_and_leaves_full_ones_alone(tmp_path, monkeypatch):
    """Issue 32: a big cache is not merged into one part a lookup must hold whole; parts merged
    to near the bound are not read again by later compactions."""
    monkeypatch.setattr(cache_module, "COMPACT_ROWS", 4)
    cache = ResponseCache(tmp_path / "cache", log=lambda _: None, compact_at=1)
    for i in range(10):
        cache.add(cached([f"k{i}"]))
    first = sorted(Path(p).name for p in cache.compact(cache.parts()))
    sizes = sorted(pq.read_table(tmp_path / "cache" / name).num_rows for name in first)
    assert sizes == [2, 4, 4] and all(name.startswith("part-m") for name in first)
    for i in range(10, 13):
        cache.add(cached([f"k{i}"]))
    read = []
    monkeypatch.setattr(cache, "_read", lambda part, missing_ok=False: read.append(part)
                        or ResponseCache._read(cache, part, missing_ok))
    after = sorted(Path(p).name for p in cache.compact(cache.parts()))
    assert set(first) <= set(after) and len(after) == 4  # the old ones untouched, one new
    assert all(Path(p).name not in first for p in read)  # ... and not even read
    assert sorted(cache.lookup([f"k{i}" for i in range(13)])) == sorted(f"k{i}" for i in range(13))


def test_a_part_compacted_away_by_another_caller_is_not_an_error(tmp_path):
    cache = ResponseCache(tmp_path / "cache", compact_at=1)
    for i in range(3):
        cache.add(cached([f"k{i}"]))
    parts = cache.parts()
    gone = pq.read_table(parts[0]).column("key").to_pylist()
    Path(parts[0]).unlink()  # another compaction got there first...
    cache.add(cached(gone))  # ...and its merged part holds those rows
    remaining = cache.compact(parts)
    assert len(remaining) == 2  # the merged part and the one written meanwhile
    assert sorted(cache.lookup(["k0", "k1", "k2"])) == ["k0", "k1", "k2"]
