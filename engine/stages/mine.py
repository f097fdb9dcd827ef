"""MINE: the seed rows the student got wrong. LLM2LLM augments only original seed rows."""

from __future__ import annotations

import pyarrow as pa

from engine.records import EXAMPLE, require_columns


def mine_errors(train_set: pa.Table, predictions: pa.Table) -> pa.Table:
    """Wrong *seed* rows of the training set, with the wrong output as `trigger_prediction`.

    Synthetic rows are never mined, even when wrong (LLM2LLM, section 3): augmenting
    augmented data drifts away from the real distribution.
    """
    require_columns(predictions, ["id", "split", "correct", "output"], "mine")
    wrong = {r["id"]: r["output"] for r in predictions.to_pylist()
             if r["split"] == "train" and not r["correct"]}
    rows = []
    for ex in train_set.to_pylist():
        if ex["origin"] == "seed" and ex["id"] in wrong:
            rows.append({**ex, "trigger_prediction": wrong[ex["id"]]})
    return pa.Table.from_pylist(rows, schema=EXAMPLE)
