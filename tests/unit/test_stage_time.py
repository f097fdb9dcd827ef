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


def test_training_phases_are_summed_over_the_trainings_that_record_them(tmp_path):
    unit = tmp_path / "t" / "llm2llm" / "seed_0"
    manifest(unit / "round_0" / "train", "train", 0, 40, train_seconds=10,
             phases={"start_s": 15.0, "set_up_s": 12.0, "train_s": 10.0, "other_s": 3.0})
    manifest(unit / "round_1" / "train", "train", 50, 90, train_seconds=20,
             phases={"start_s": 10.5, "set_up_s": 8.0, "train_s": 20.0, "other_s": 1.5})
    manifest(unit / "round_2" / "train", "train", 100, 120, train_seconds=5)  # an older engine
    phases = stage_times(tmp_path)["stages"]["train"]["phases"]
    assert phases == {"start_s": 25.5, "set_up_s": 20.0, "train_s": 30.0, "other_s": 4.5}
