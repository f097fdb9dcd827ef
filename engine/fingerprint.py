"""A stage's inputs as one hash, so a compare can tell when two units would compute the same
stage and do it once (engine/stage_store.py, `same_inputs_twin`).

Tables are hashed by their rows' values in order (not their Arrow layout, which differs between
a table read back and one put together from parts); anything else by its JSON.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa


def inputs_fingerprint(*parts) -> str:
    """sha256 over `parts` in order: tables row by row, other values as JSON."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, pa.Table):
            digest.update(f"table {part.num_rows} {part.column_names}\n".encode())
            for batch in part.to_batches(max_chunksize=10_000):
                for row in batch.to_pylist():
                    digest.update(json.dumps(row, sort_keys=True, default=str).encode())
                    digest.update(b"\n")
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()
