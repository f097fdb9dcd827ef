"""The row schemas. Every column is documented once, here.

Rows travel as pyarrow tables between stages and are stored as Parquet. Each schema is a
pyarrow schema so a stage can check its input columns and a writer can cast to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from engine.errors import StageError

# Where a row comes from (EXAMPLE.origin): the task's data, the teacher, or a target that is
# not a real row (a label slot to write from the description, a rationale to write on).
SEED, SYNTHETIC, VALIDATION = "seed", "synthetic", "validation"
GUARD = "guard"  # held-out rows that choose the round a unit ships (tasks.<i>.n_guard)
DESCRIPTION = "description"  # zerogen's label slot: no real row to show the teacher
RATIONALE = "rationale"  # s3's rationale, the theme its seed rows are written on

# A training example: a seed row or an accepted synthetic row (the data set D_r).
EXAMPLE = pa.schema(
    [
        ("id", pa.string()),  # stable row id; seed: "<task>:<split>:<n>", synthetic: see augment
        ("task", pa.string()),  # task name, carried through every pipeline
        ("input", pa.string()),  # the question / text the student sees
        ("target", pa.string()),  # the full answer the student is trained to write
        ("label", pa.string()),  # the gold answer the grader compares with (number or label)
        ("origin", pa.string()),  # seed, synthetic or validation; a target: description, rationale
        ("round", pa.int32()),  # round that added the row (-1 for seed rows)
        ("seed_id", pa.string()),  # the seed row this row descends from (itself for seed rows)
        ("trigger_prediction", pa.string()),  # the wrong student output that triggered it
        ("teacher_model", pa.string()),  # teacher that wrote it ("" for seed rows)
        ("prompt_hash", pa.string()),  # content hash of the teacher prompt template
        ("sampling", pa.string()),  # JSON of the sampling parameters of the request that wrote it
    ]
)

# A student prediction over the mining set (split "train") or the test set (split "test").
PREDICTION = pa.schema(
    [
        ("id", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),  # "train" (mining set), "test" or "guard" (tasks.<i>.n_guard)
        ("origin", pa.string()),  # origin of the example (which origins are mined: mine_from)
        ("output", pa.string()),  # raw student completion
        ("extracted", pa.string()),  # answer the grader pulled out of the output ("" if none)
        ("correct", pa.bool_()),
        ("completion_tokens", pa.int64()),
        ("error", pa.string()),  # why the row failed to generate ("" if it did not)
    ]
)

# A teacher candidate: one parsed example, accepted or not.
CANDIDATE = pa.schema(
    list(EXAMPLE)
    + [
        ("accepted", pa.bool_()),
        ("reject_reason", pa.string()),  # "" when accepted; else e.g. "duplicate", "unparsed"
    ]
)

# The text generation contract: a backend receives these columns and adds GENERATED ones.
# messages: JSON list of {"role", "content"}; sampling: JSON of the sampling parameters
# (engine/sampling.py), used unchanged for the cache key, the engine or API call and lineage.
# Optional: `regex` constrains decoding; `sample` (int) tells apart repeated asks of the same
# request (the teacher's top-up), so each gets its own answer and cache entry; `draw` (int,
# the unit's training seed) gives each training seed of a compare its own teacher answers
# (the cache key's seed; without it, the job's `seed`).
GENERATION_INPUT = ["request_id", "messages", "sampling"]
GENERATED = pa.schema(
    [
        ("request_id", pa.string()),
        ("output", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("error", pa.string()),  # why the row failed, after retries ("" if it did not)
        ("cached", pa.bool_()),  # answered from the run's response cache, not generated now
        ("attempts", pa.int32()),  # calls made for it now (API retries count; 0 if cached)
        ("replica", pa.string()),  # which vLLM replica (host:pid) or "api" answered it
    ]
)


def require_columns(table: pa.Table, columns: list[str], stage: str) -> None:
    """Fail with the stage name and the missing columns, instead of a KeyError deep inside."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise StageError(stage, f"input lacks columns {missing}; it has {table.column_names}")



def request_id(seed_id: str, round_: int, sample: int = 0) -> str:
    """A teacher request about a target row in a round; `sample` > 0 for a top-up ask, and
    for any ask after round 0 (its samples are the round's own: stages/augment.py)."""
    return f"{seed_id}@r{round_}" + (f"~{sample}" if sample else "")


GENERATIONS = "generations"  # a stage's raw GENERATED rows, stored beside its output
RATIONALES = "rationales"  # s3's round-0 rationales (EXAMPLE rows), beside the augment output


@dataclass
class StageResult:
    """What every stage gives the round: its table (stored as the stage's Parquet) and facts
    about the run kept in its manifest (the train stage's stats, the augment stage's asks)."""

    table: pa.Table
    info: dict = field(default_factory=dict)
    # other tables stored beside it, by name (the raw generations, s3's rationales)
    beside: dict[str, pa.Table] = field(default_factory=dict)
