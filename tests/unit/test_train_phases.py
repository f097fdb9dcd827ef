"""The training log line's account of where the wall time went."""

from engine.backends.deepspeed_trainer import phases_line


def test_phases_are_named_in_the_order_they_happen():
    phases = {"other_s": 4.8, "copy_s": 0.01, "train_s": 120.4, "save_s": 0.3,
              "set_up_s": 14.0, "start_s": 15.8}
    assert phases_line(phases) == ("workers starting 16s, set-up 14s, steps 120s, save 0s, "
                                   "copy 0s, Ray Train 5s")


def test_a_training_found_finished_on_resume_names_the_phases_it_has():
    assert phases_line({"start_s": 12.0, "copy_s": 1.0, "other_s": 3.0}) == \
        "workers starting 12s, copy 1s, Ray Train 3s"
