"""Read a task's source rows: local JSONL or Parquet files, or a `datasets` hub name.

Hub sources are written `hub:<name>[:<subset>][@<split>]`, e.g. `hub:openai/gsm8k:main@test`.

Errors name the file and, for JSONL, the line, so a user can fix the data and re-run.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from engine.errors import DataError

HUB_PREFIX = "hub:"
HUB_PROBE_TIMEOUT_S = 5  # a hub that does not answer in this long is not there


def is_hub_source(source: str) -> bool:
    return source.startswith(HUB_PREFIX)


def check_source(source: str, what: str) -> list[str]:
    """Problems with a source that can be found without reading it all (for preflight)."""
    if is_hub_source(source):
        return []
    path = Path(source).expanduser()
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix in (".jsonl", ".parquet"))
        return [f"{what}: {str(path)!r} is a directory; name a .jsonl/.parquet file in it"
                + (f" ({', '.join(found[:5])})" if found else "")]
    if not path.is_file():
        relative = "" if path.is_absolute() else f", read from the working directory {os.getcwd()}"
        return [f"{what}: data file {str(path)!r} does not exist{relative} (give a "
                f".jsonl/.parquet path, or 'hub:<dataset>' for a datasets hub name)"]
    if path.suffix not in (".jsonl", ".json", ".parquet"):
        return [f"{what}: data file {str(path)!r} must end in .jsonl or .parquet"]
    return []


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    offset = 0  # of the line's first byte in the file, to name a bad byte's place
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
                raw, offset = raw[3:], 3  # (Windows editors write one): not part of the JSON
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not UTF-8 (byte 0x{raw[exc.start]:02x} at "
                                f"offset {offset + exc.start} of the file); re-save the file as "
                                f"UTF-8") from None
            offset += len(raw)
            if not text:
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON line ({exc.msg}); "
                                f"fix or remove that line and re-run") from None
            except RecursionError:
                raise DataError(f"{path}:{lineno}: JSON nested too deeply to be a data row; "
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
        _probe_hub(source)
        try:
            return list(datasets.load_dataset(name, subset or None, split=hub_split or split))
        except (OSError, ValueError) as exc:  # not found, an offline cache miss
            raise DataError(f"{source}: cannot load it from the hub ({str(exc).splitlines()[0]}); "
                            f"check the name, or point data.{split} at local .jsonl/.parquet "
                            f"files") from None
    path = Path(source).expanduser()
    problems = check_source(source, split)
    if problems:
        raise DataError(problems[0])
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]}); "
                            f"write it again, or give the rows as .jsonl") from None
    return read_jsonl(path)


def _probe_hub(source: str) -> None:
    """Fail in seconds, not after the datasets library's minutes of retries, when the hub
    cannot be reached (no network, a proxy that never answers). HF_DATASETS_OFFLINE /
    HF_HUB_OFFLINE mean the local cache is meant: no probe."""
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:  # urllib honours the *_PROXY variables, as the datasets library does
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"),
                               timeout=HUB_PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # it answered
    except (OSError, ValueError) as exc:
        raise DataError(f"{source}: the hub ({endpoint}) did not answer within "
                        f"{HUB_PROBE_TIMEOUT_S} s ({exc}); this machine has no network to it. "
                        f"Download the data where there is one and point the task's data at "
                        f"local .jsonl/.parquet files, or set HF_DATASETS_OFFLINE=1 to use "
                        f"the local datasets cache") from None


def pick_fields(rows: list[dict], fields: dict[str, str], source: str) -> list[dict]:
    """Map source columns onto task roles; name the missing or null column and the row."""
    out = []
    for i, row in enumerate(rows):
        try:
            picked = {role: row[col] for role, col in fields.items()}
        except KeyError as exc:
            raise DataError(f"{source}: row {i + 1} has no field {exc.args[0]!r} (has "
                            f"{sorted(row)}); set the task's `fields` mapping") from None
        empty = [col for role, col in fields.items() if picked[role] is None]
        if empty:
            raise DataError(f"{source}: row {i + 1}: field {empty[0]!r} is null; fill it in or "
                            f"remove the row")
        out.append(picked)
    return out
