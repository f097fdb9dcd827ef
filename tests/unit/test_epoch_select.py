"""train.select_epoch: validation (issue 33): the best epoch on held-out rows, never test rows."""

import pytest
import torch

from engine.backends.epoch_select import EpochSelector, epoch_ends, validation_score
from engine.backends.train_data import IGNORE, collate, collate_encoder
from engine.config import RunConfig
from engine.driver import RoundLoop
from engine.tasks import build_task
from tests.fakes import FakeGenerator, FakeTrainer


def test_epoch_ends_cover_a_fractional_last_epoch():
    assert epoch_ends(8, 4) == [4, 8]
    assert epoch_ends(10, 4) == [4, 8, 10]  # 2.5 epochs: the half epoch is scored too
    assert epoch_ends(3, 4) == [3]


def test_the_best_epochs_weights_are_restored_the_first_best_on_a_tie():
    module = torch.nn.Linear(2, 1)
    scores = iter([0.5, 0.7, 0.7, 0.6])
    selector = EpochSelector(lambda: next(scores))
    weights = []
    for epoch in range(4):
        with torch.no_grad():
            module.weight.fill_(float(epoch))
        weights.append(module.weight.clone())
        selector.epoch_end(module)
    selector.restore(module)
    assert torch.equal(module.weight, weights[1])  # epoch 2, not the tied epoch 3
    assert selector.stats() == {"epoch_scores": [0.5, 0.7, 0.7, 0.6], "chosen_epoch": 2}


class Out:
    def __init__(self, logits=None, loss=None):
        self.logits, self.loss = logits, loss


class Classifier(torch.nn.Module):
    """Predicts class 1 for a row whose first token is odd."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, labels):
        odd = (input_ids[:, 0] % 2).float()
        return Out(logits=torch.stack([1 - odd, odd], dim=-1))


class Causal(torch.nn.Module):
    """A batch's loss is its first token (a stand-in for a mean over target tokens)."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, labels):
        return Out(loss=input_ids[0, 0].float())


def test_validation_score_is_accuracy_for_an_encoder_and_negated_loss_for_a_causal_student():
    rows = [{"input_ids": [1, 5], "label": 1}, {"input_ids": [2], "label": 0},
            {"input_ids": [3], "label": 0}, {"input_ids": [4], "label": 0}]
    module = Classifier().train()
    assert validation_score(module, rows, collate_encoder, 0, encoder=True) == 0.75
    assert module.training  # left as it was found
    causal = [{"input_ids": [2, 9, 9], "labels": [IGNORE, 9, 9]},  # 2 target tokens
              {"input_ids": [4, 9], "labels": [IGNORE, 9]}]  # 1
    # batches of one row: losses 2 and 4, weighted by their target tokens
    assert validation_score(Causal(), causal, collate, 0, encoder=False, batch_size=1) == \
        pytest.approx(-(2 * 2 + 4 * 1) / 3)


def run_loop(tmp_path, select_epoch):
    from tests.unit.test_tasks import yaml_task

    task_cfg = yaml_task(tmp_path, n_test=3)
    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / f"run-{select_epoch}"), "rounds": 1,
        "tasks": [{**task_cfg.model_dump(), "n_validation": 4}],
        "train": {"select_epoch": select_epoch}})
    task = build_task(cfg.tasks[0], cfg.seed)
    trainer = FakeTrainer()
    loop = RoundLoop(cfg, [task], "base", "teacher", FakeGenerator(lambda m: "spam"),
                     FakeGenerator(lambda m: "spam"), trainer, log=lambda m: None)
    list(loop.run())
    return task, trainer


def test_the_epoch_is_chosen_on_validation_rows_never_on_test_rows(tmp_path):
    task, trainer = run_loop(tmp_path, "validation")
    seed, test, validation, _ = task.splits(validation=True)
    given = trainer.validations[0].column("input").to_pylist()
    assert given == [r["input"] for r in validation] and given
    assert not set(given) & {r["input"] for r in test}
    assert not set(given) & {r["input"] for r in seed}
    _, trainer = run_loop(tmp_path, "last")
    assert trainer.validations == [None]  # nothing to choose on: the last epoch


def test_select_epoch_with_zero3_is_refused_with_the_fix():
    from engine.config import TrainConfig

    with pytest.raises(ValueError, match="set train.zero_stage to 2 or lower"):
        TrainConfig(select_epoch="validation", zero_stage=3)


def test_patience_stops_after_that_many_epochs_without_a_better_score():
    scores = iter([0.5, 0.7, 0.7, 0.6])
    selector, module = EpochSelector(lambda: next(scores)), torch.nn.Linear(2, 1)
    for stop_after_2 in (False, False, False, True):  # a tie is not better: epoch 2 stays best
        selector.epoch_end(module)
        assert selector.should_stop(2) is stop_after_2
        assert selector.should_stop(None) is False


class FakeEngine:
    """What the step loop uses of a DeepSpeed engine, over a torch module."""

    def __init__(self, module):
        self.module, self.device, self.steps = module, torch.device("cpu"), 0

    def train(self):
        self.module.train()

    def __call__(self, **batch):
        return Out(loss=self.module.dummy.sum() * 0 + 1.0)

    def backward(self, loss):
        pass

    def step(self):
        self.steps += 1


@pytest.mark.parametrize("patience, steps", [(None, 12), (2, 8), (5, 12)])
def test_the_step_loop_stops_when_patience_runs_out(patience, steps):
    """6 epochs of 2 steps; the validation score peaks at epoch 2, so patience 2 stops after
    epoch 4 (8 steps), patience 5 never stops (epoch 6 is only 4 past the best)."""
    from engine.backends.deepspeed_trainer import _run_steps
    from engine.config import TrainConfig

    cfg = TrainConfig(select_epoch="validation", patience=patience, batch_size=2,
                      num_workers=1, log_every=100)
    features = [{"input_ids": [i + 1], "label": i % 2} for i in range(4)]
    batches = [[0, 1], [2, 3]] * 6
    scores = iter([0.5, 0.8, 0.7, 0.6, 0.6, 0.6])
    selector = EpochSelector(lambda: next(scores))
    engine = FakeEngine(Classifier())
    progress = {"step": 0, "tokens": 0, "losses": [], "seconds": 0.0}
    stats = _run_steps(engine, features, batches, 0, cfg, 0, progress, set(),
                       collate_batch=collate_encoder, selector=selector)
    assert engine.steps == stats["steps"] == steps
    assert selector.best_epoch == 2
    assert stats.get("stopped_after_epoch") == (4 if patience == 2 else None)


def test_patience_without_choosing_the_epoch_is_refused_with_the_fix():
    from engine.config import TrainConfig

    with pytest.raises(ValueError, match="set train.select_epoch: validation"):
        TrainConfig(patience=3)
