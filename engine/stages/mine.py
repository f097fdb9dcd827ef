"""MINE: the rows the student got wrong. LLM2LLM augments only original seed rows."""

from __future__ import annotations

import pyarrow as pa

from engine.records import EXAMPLE, require_columns


def with_outputs(rows: pa.Table, predictions: pa.Table) -> tuple[pa.Table, list[bool]]:
    """The rows that were predicted (split "train"), each with the student's output as
    `trigger_prediction`, and whether it was right."""
    require_columns(predictions, ["id", "split", "correct", "output"], "mine")
    graded = {r["id"]: r for r in predictions.to_pylist() if r["split"] == "train"}
    out, correct = [], []
    for ex in rows.to_pylist():
        if ex["id"] in graded:
            out.append({**ex, "trigger_prediction": graded[ex["id"]]["output"]})
            correct.append(graded[ex["id"]]["correct"])
    return pa.Table.from_pylist(out, schema=EXAMPLE), correct


def mine_errors(train_set: pa.Table, predictions: pa.Table,
                origins: tuple[str, ...] = ("seed",)) -> pa.Table:
    """Wrong rows of the training set whose origin is in `origins`, with the wrong output as
    `trigger_prediction`.

    By default only seed rows are mined, even when synthetic ones are wrong (LLM2LLM,
    section 3): augmenting augmented data drifts away from the real distribution. Mining all
    rows is the paper's ablation (strategy.mine_from: all).
    """
    rows, correct = with_outputs(train_set, predictions)
    keep = [not ok and origin in origins
            for ok, origin in zip(correct, rows.column("origin").to_pylist())]
    return rows.filter(pa.array(keep, pa.bool_()))
