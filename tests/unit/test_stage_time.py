"""benchmarks.stage_time: where a run's time went, from the stages' manifests."""

import json

from benchmarks.stage_time import stage_times


def manifest(folder, stage, start, end, **info):
    folder.mkdir(parents=True)
    (folder / "MANIFEST.json").write_text(json.dumps(
        {"stage": stage, "started_at": start, "finished_at": end, "info": info}))


def test_stage_time_sums_stages_once_and_measures_overlap(tmp_path):
    shared = tmp_path / "t" / "llm2llm" / "seed_0" / "round_0"
    manifest(shared / "train", "train", 0, 100, train_seconds=60)
    manifest(shared / "predict", "predict", 100, 110)
    # round 0 is shared: another unit's round_0 stages are copies that say so
    copy = tmp_path / "t" / "random" / "seed_0" / "round_0" / "train"
    copy.mkdir(parents=True)
    (copy / "MANIFEST.json").write_text(json.dumps(
        {"stage": "train", "finished_at": 300, "seconds": 0.0, "copied_from": "t/llm2llm/seed_0"}))
    manifest(tmp_path / "t" / "llm2llm" / "seed_0" / "round_1" / "train", "train", 105, 125,
             train_seconds=15)
    manifest(tmp_path / "t" / "random" / "seed_0" / "round_1" / "train", "train", 200, 230,
             train_seconds=20)
    result = stage_times(tmp_path)
    assert result["stages"]["train"] == {"count": 3, "seconds": 150.0, "loop_seconds": 95.0,
                                         "share": round(150 / 160, 3)}
    assert result["stages"]["predict"]["count"] == 1
    assert (result["wall_s"], result["busy_s"]) == (230.0, 155.0)  # idle from 125 to 200
    assert result["mean_in_flight"] == round(160 / 155, 2)
