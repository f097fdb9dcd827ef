"""The row schemas. Every column is documented once, here.

Rows travel as pyarrow tables between stages and are stored as Parquet. Each schema is a
pyarrow schema so a stage can check its input columns and a writer can cast to it.
"""

from __future__ import annotations

import pyarrow as pa

from engine.errors import StageError

# A training example: a seed row or an accepted synthetic row (the data set D_r).
EXAMPLE = pa.schema(
    [
        ("id", pa.string()),  # stable row id; seed: "<task>:<split>:<n>", synthetic: see augment
        ("task", pa.string()),  # task name, carried through every pipeline
        ("input", pa.string()),  # the question / text the student sees
        ("target", pa.string()),  # the full answer the student is trained to write
        ("label", pa.string()),  # the gold answer the grader compares with (number or label)
        ("origin", pa.string()),  # "seed" or "synthetic"
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
        ("split", pa.string()),  # "train" (mining set) or "test"
        ("origin", pa.string()),  # origin of the example; only "seed" rows are ever mined
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
# request (the teacher's top-up), so each gets its own answer and cache entry.
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

