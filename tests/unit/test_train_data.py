import pytest

from engine.backends.train_data import (IGNORE, build_features, checkpoint_steps, collate,
                                        collate_encoder, encoder_features, epoch_batches)


def test_loss_only_on_answer_and_eos():
    f = build_features([1, 2, 3], [7, 8], eos_id=9, max_len=10)
    assert f["input_ids"] == [1, 2, 3, 7, 8, 9]
    assert f["labels"] == [IGNORE] * 3 + [7, 8, 9]


def test_truncation_cuts_prompt_from_the_left():
    f = build_features([1, 2, 3, 4], [7, 8], eos_id=9, max_len=5)
    assert f["input_ids"] == [3, 4, 7, 8, 9]
    assert f["labels"] == [IGNORE, IGNORE, 7, 8, 9]


def test_collate_pads_right_and_masks():
    batch = collate([{"input_ids": [1, 2], "labels": [IGNORE, 2]},
                     {"input_ids": [3], "labels": [3]}], pad_id=0)
    assert batch["input_ids"] == [[1, 2], [3, 0]]
    assert batch["labels"] == [[IGNORE, 2], [3, IGNORE]]
    assert batch["attention_mask"] == [[1, 1], [1, 0]]


def test_epoch_batches_fractional_and_deterministic():
    a = epoch_batches(10, 4, 1.5, seed=0)
    assert len(a) == 5  # 3 steps per epoch, 1.5 epochs -> ceil(4.5)
    assert a == epoch_batches(10, 4, 1.5, seed=0)
    assert sorted(i for b in a[:3] for i in b) == list(range(10))  # one epoch covers all rows


def test_checkpoint_steps_per_epoch_and_every_n():
    # 3 micro-steps per epoch, 7 in all: epoch ends after 3 and 6, never after the last.
    assert checkpoint_steps(7, 3, 1, "epoch") == [3, 6]
    assert checkpoint_steps(6, 3, 1, "epoch") == [3]
    # With accumulation over 2 micro-steps, an epoch end moves to the next optimizer step.
    assert checkpoint_steps(7, 3, 2, "epoch") == [4, 6]
    assert checkpoint_steps(10, 5, 1, 2) == [2, 4, 6, 8]
    assert checkpoint_steps(10, 5, 2, 2) == [4, 8]  # every 2 optimizer steps of 2 micro-steps
    assert checkpoint_steps(10, 5, 1, "never") == []


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_no_training_step_runs_at_learning_rate_zero(schedule):
    import torch
    from deepspeed.runtime import lr_schedules

    from engine.backends.deepspeed_trainer import cosine_schedule, deepspeed_config
    from engine.config import TrainConfig

    for total in (2, 6, 14, 40):  # a tiny seed set is a handful of steps
        cfg = TrainConfig(lr=1e-4, warmup_ratio=0.1, schedule=schedule)
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
        if schedule == "cosine":  # a torch scheduler DeepSpeed is handed
            assert "scheduler" not in deepspeed_config(cfg, total, False)
            decay = cosine_schedule(cfg, total)(opt)
        else:
            scheduler = deepspeed_config(cfg, total, False)["scheduler"]
            decay = getattr(lr_schedules, scheduler["type"])(opt, **scheduler["params"])
        lrs = []
        for _ in range(total):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            decay.step()
        assert min(lrs) > 0, (total, lrs)
        assert max(lrs) <= 1e-4 + 1e-12
        if schedule == "cosine" and total >= 6:  # the peak in the first half, the end low
            assert lrs.index(max(lrs)) < total / 2 and lrs[-1] < 0.2 * max(lrs), lrs


def test_encoder_rows_keep_their_closing_sep_and_pad_right():
    long = encoder_features([101, 5, 6, 7, 8, 9, 102], label_id=3, max_len=5, sep_id=102)
    assert long == {"input_ids": [101, 5, 6, 7, 102], "label": 3}
    short = encoder_features([101, 5, 102], label_id=0, max_len=5, sep_id=102)
    batch = collate_encoder([long, short], pad_id=0)
    assert batch["input_ids"][1] == [101, 5, 102, 0, 0]
    assert batch["attention_mask"] == [[1] * 5, [1, 1, 1, 0, 0]]
    assert batch["labels"] == [3, 0]


def test_a_build_lock_left_by_a_killed_compile_is_cleared(tmp_path, monkeypatch):
    import os

    from engine.backends.deepspeed_trainer import STALE_BUILD_LOCK_S, clear_stale_build_locks

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    (tmp_path / "deepspeed_shm_comm").mkdir()
    (tmp_path / "other_op").mkdir()
    stale, fresh = tmp_path / "deepspeed_shm_comm" / "lock", tmp_path / "other_op" / "lock"
    stale.touch()
    fresh.touch()
    old = stale.stat().st_mtime - STALE_BUILD_LOCK_S - 1
    os.utime(stale, (old, old))
    assert clear_stale_build_locks() == [str(stale)]
    assert not stale.exists() and fresh.exists()  # a compile in progress keeps its lock
