"""Read a task's source rows: local JSONL or Parquet files, or a `datasets` hub name.

Hub sources are written `hub:<name>[:<subset>][@<split>]`, e.g. `hub:openai/gsm8k:main@test`.

Errors name the file and, for JSONL, the line, so a user can fix the data and re-run.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.errors import DataError

HUB_PREFIX = "hub:"


def is_hub_source(source: str) -> bool:
    return source.startswith(HUB_PREFIX)


def check_source(source: str, what: str) -> list[str]:
    """Problems with a source that can be found without reading it all (for preflight)."""
    if is_hub_source(source):
        return []
    path = Path(source).expanduser()
    if not path.is_file():
        return [f"{what}: data file {str(path)!r} does not exist (give a .jsonl/.parquet path, "
                f"or 'hub:<dataset>' for a datasets hub name)"]
    if path.suffix not in (".jsonl", ".json", ".parquet"):
        return [f"{what}: data file {str(path)!r} must end in .jsonl or .parquet"]
    return []


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON line ({exc.msg}); "
                                f"fix or remove that line and re-run") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got "
                                f"{type(row).__name__}")
            rows.append(row)
    return rows


def read_source(source: str, split: str) -> list[dict]:
    """All rows of a source as dicts. `split` picks the hub split (train/test)."""
    if is_hub_source(source):
        import datasets  # heavy; only for hub sources

        spec, _, hub_split = source[len(HUB_PREFIX):].partition("@")
        name, _, subset = spec.partition(":")
        return list(datasets.load_dataset(name, subset or None, split=hub_split or split))
    path = Path(source).expanduser()
    problems = check_source(source, split)
    if problems:
        raise DataError(problems[0])
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    return read_jsonl(path)


def pick_fields(rows: list[dict], fields: dict[str, str], source: str) -> list[dict]:
    """Map source columns onto task roles; name the missing column and the row."""
    out = []
    for i, row in enumerate(rows):
        try:
            out.append({role: row[col] for role, col in fields.items()})
        except KeyError as exc:
            raise DataError(f"{source}: row {i + 1} has no field {exc.args[0]!r} (has "
                            f"{sorted(row)}); set the task's `fields` mapping") from None
    return out
