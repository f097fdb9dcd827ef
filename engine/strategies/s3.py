"""`s3`: Synthesis Step by Step (arXiv 2310.13671). No labelled training rows: round 0 writes
a synthetic seed by explain-then-generate (engine/stages/synthesize.py); every later round
trains on it plus what was added, mines the errors on the task's *real validation* rows (never
trained on, never the test set; `strategy.mine_from: validation`) and asks the teacher for
new examples like each misclassified one, shown with its true label (error extrapolation,
prompts/s3/)."""

from __future__ import annotations

import pyarrow as pa

from engine.strategies import RoundView, Strategy


class S3(Strategy):
    name = "s3"
    uses_seed = False
    explains = True

    def targets(self, view: RoundView) -> pa.Table:
        """The validation rows the student got wrong (mined there by mine_from); with
        keep_label_mix, kept to the validation rows' label mix."""
        return self.aimed(view)

    def seed_targets(self, view: RoundView, rationales: pa.Table) -> pa.Table:
        return rationales
