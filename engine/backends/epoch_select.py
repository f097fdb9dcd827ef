"""`train.select_epoch: validation`: score the student on held-out rows after every epoch and
keep the weights of the best epoch, as the S3 paper's trainer does ("tuned on the same small
validation set"), for every strategy alike.

The rows are the task's validation split, never its test rows (the driver hands over only
those). An encoder student is scored by accuracy; a causal one by its mean loss on the target
tokens (higher scores better: the loss negated), since generating every row after every epoch
would cost more than the training.
"""

from __future__ import annotations

from typing import Callable


def epoch_ends(n_batches: int, steps_per_epoch: int) -> list[int]:
    """The micro-steps after which an epoch ends (a fractional last epoch included)."""
    ends = list(range(steps_per_epoch, n_batches + 1, steps_per_epoch))
    return ends if ends and ends[-1] == n_batches else ends + [n_batches]


class EpochSelector:
    """Scores the model at each epoch's end; keeps a copy of the best epoch's weights (the
    first best on a tie: no more training than the score asks for)."""

    def __init__(self, score: Callable[[], float]):
        self.score = score
        self.scores: list[float] = []
        self.best_state: dict | None = None
        self.best_epoch: int | None = None

    def epoch_end(self, module) -> float:
        score = float(self.score())
        self.scores.append(score)
        if self.best_epoch is None or score > self.scores[self.best_epoch - 1]:
            self.best_epoch = len(self.scores)
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        return score

    def should_stop(self, patience: int | None) -> bool:
        """`patience` epochs in a row scored no better than the best (train.patience)."""
        return patience is not None and self.best_epoch is not None and \
            len(self.scores) - self.best_epoch >= patience

    def restore(self, module) -> None:
        """Load the best epoch's weights into `module` (before it is saved)."""
        if self.best_state is not None:
            module.load_state_dict(self.best_state)

    def stats(self) -> dict:
        return {"epoch_scores": [round(s, 4) for s in self.scores],
                "chosen_epoch": self.best_epoch}


def validation_score(module, features: list[dict], collate_batch, pad_id: int,
                     encoder: bool, batch_size: int = 32) -> float:
    """Accuracy (an encoder) or the negated mean target-token loss (a causal student) of
    `module` on the tokenised validation rows; the module is left in training mode."""
    import torch

    was_training = module.training
    module.eval()
    right = total = 0
    loss_sum, tokens = 0.0, 0
    device = next(module.parameters()).device
    with torch.no_grad():
        for i in range(0, len(features), batch_size):
            batch = {k: torch.tensor(v, device=device)
                     for k, v in collate_batch(features[i:i + batch_size], pad_id).items()}
            out = module(**batch)
            if encoder:
                right += int((out.logits.argmax(-1) == batch["labels"]).sum())
                total += len(batch["labels"])
            else:  # the mean over a batch's target tokens, weighted back to a sum
                n = int((batch["labels"][:, 1:] != -100).sum())
                loss_sum += float(out.loss) * n
                tokens += n
    module.train(was_training)
    if encoder:
        return right / max(1, total)
    return -loss_sum / max(1, tokens)
