"""MINE: the rows the student got wrong, among the rows the strategy mines (`mine_from`):
the seed (LLM2LLM: only original rows are augmented), every training row (the paper's
ablation) or the task's real validation rows (S3)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from engine.records import EXAMPLE, SEED, SYNTHETIC, VALIDATION, require_columns

# mine_from -> the origins of the rows that are mined
MINED_ORIGINS = {"seed": (SEED,), "all": (SEED, SYNTHETIC), "validation": (VALIDATION,)}


def mining_rows(mine_from: str, train_set: pa.Table, validation: pa.Table) -> pa.Table:
    """The rows the student is graded on to find errors (and random targets)."""
    if mine_from == "validation":
        return validation
    if mine_from == "all":
        return train_set
    return train_set.filter(pc.equal(train_set["origin"], SEED))


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


def mine_errors(rows: pa.Table, predictions: pa.Table,
                origins: tuple[str, ...] = (SEED,)) -> pa.Table:
    """Wrong rows among `rows` whose origin is in `origins`, with the wrong output as
    `trigger_prediction`.

    By default only seed rows are mined, even when synthetic ones are wrong (LLM2LLM,
    section 3): augmenting augmented data drifts away from the real distribution. Mining all
    rows is the paper's ablation (strategy.mine_from: all).
    """
    rows, correct = with_outputs(rows, predictions)
    keep = [not ok and origin in origins
            for ok, origin in zip(correct, rows.column("origin").to_pylist())]
    return rows.filter(pa.array(keep, pa.bool_()))
