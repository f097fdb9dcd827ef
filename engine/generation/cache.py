"""A content-addressed cache of generated responses, kept in the run directory.

A response is stored under a key made from everything that determines it: the model (a
fingerprint of its files for a local folder), the messages, the sampling parameters, the seed,
the structured-output regex and the sample index. The request id is *not* in the key, so the
same request asked again (a re-run, a resumed run, a later round with the same error) is
answered from here and never generated or paid for twice.

Layout: <run_dir>/cache/responses/part-<uuid>.parquet. The worker that received the responses
writes them (a vLLM client after each batch, an API client every few seconds), atomically and
with page checksums, so a crash loses only the requests in flight. Only successful responses
are stored: a failed row is retried next time.

One part per batch adds up (a 100,000-request stage writes over a thousand), and every lookup
lists and opens them all: past `COMPACT_AT` small parts, a lookup first merges them into parts
of up to `COMPACT_ROWS` rows. Parts are read one at a time, so neither a lookup nor a
compaction holds the whole cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine import fs
from engine.storage import parquet_bytes, read_parquet

CACHE_KEY = "cache_key"  # the column that carries each request's key to the workers
COMPACT_AT = 64  # small parts; more than this and a lookup merges them first
COMPACT_ROWS = 100_000  # rows of a merged part at most (what a lookup or compaction holds)
MERGED = "m"  # a merged part is part-m<rows>-<uuid>.parquet: its size is in its name
LOOKUP_PASSES = 3  # listings a lookup reads, when compactions elsewhere remove parts under it
STALE_TMP_S = 3600  # a temporary file this old is a write that never finished
_COMPACTING: dict[str, threading.Lock] = {}  # root -> lock (tasks side by side share a cache)

CACHED = pa.schema([
    ("key", pa.string()),
    ("output", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
])


def model_fingerprint(model: str) -> str:
    """The model's identity for cache keys. A folder (local, or at a filesystem URI) is
    identified by its files' names, sizes and modification times, so a checkpoint re-written
    at the same path is a new model; anything else (a hub or API model name) by its name."""
    if not fs.is_uri(model) and not Path(model).is_dir():
        return model
    filesystem, path = fs.open_fs(model)
    if not fs.is_dir(filesystem, path):
        return model
    digest = fs.listing_digest(fs.list_files(filesystem, path, recursive=True), path)
    return f"{path.rstrip('/').rsplit('/', 1)[-1]}@{digest[:16]}"


def cache_key(model_id: str, messages: str, sampling: str, seed: int, regex: str | None,
              sample: int = 0) -> str:
    # messages and sampling arrive as the JSON text the request row carries; re-dump them
    # canonically so formatting differences do not split the cache.
    doc = {"model": model_id, "messages": json.loads(messages), "sampling": json.loads(sampling),
           "seed": seed, "regex": regex or None, "sample": sample}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


class ResponseCache:
    """root: a local path or a filesystem URI (engine/fs.py), as RunStorage.cache_dir gives."""

    def __init__(self, root: str, log=print, compact_at: int = COMPACT_AT):
        self.root = str(root)
        self.fs, self.path = fs.open_fs(self.root)
        self.log, self.compact_at = log, compact_at

    def parts(self) -> list[str]:
        return [f.path for f in fs.list_files(self.fs, self.path)
                if f.base_name.startswith("part-") and f.base_name.endswith(".parquet")]

    def lookup(self, keys: list[str]) -> dict[str, dict]:
        """key -> cached row, for the keys that are cached. An unreadable part (which atomic
        writes should make impossible, but disks fail) is reported and skipped, never read.
        A part that is gone by the time it is read was merged by a compaction in another
        process, which writes the merged part first: the parts are listed again and the new
        ones read, so a race does not regenerate (and pay for) what is cached."""
        wanted = pa.array(sorted(set(keys)), pa.string())
        found: dict[str, dict] = {}
        parts = self.parts()
        if sum(not _full(p) for p in parts) > self.compact_at:
            self.remove_stale_temporaries()
            parts = self.compact(parts)
        read: set[str] = set()
        for _ in range(LOOKUP_PASSES):
            gone = False
            for part in parts:
                read.add(part)
                table = self._read(part, missing_ok=True)
                if table is None:
                    gone = gone or not fs.exists(self.fs, part)
                    continue
                hits = table.filter(pc.is_in(table["key"], value_set=wanted))
                for row in hits.to_pylist():
                    found[row["key"]] = row
            if not gone:
                break
            parts = [part for part in self.parts() if part not in read]
        return found

    def remove_stale_temporaries(self, older_than_s: float = STALE_TMP_S) -> int:
        """Delete the temporary files of writes that never finished (a worker killed between
        writing and renaming); a write in flight is seconds old and is left alone."""
        cutoff = time.time_ns() - older_than_s * 1e9
        stale = [f.path for f in fs.list_files(self.fs, self.path)
                 if f.base_name.endswith(".tmp") and f.mtime_ns is not None
                 and f.mtime_ns < cutoff]
        for path in stale:
            with contextlib.suppress(FileNotFoundError):
                fs.delete(self.fs, path)
        if stale:
            self.log(f"[cache] removed {len(stale)} temporary file(s) of unfinished writes")
        return len(stale)

    def compact(self, parts: list[str]) -> list[str]:
        """Merge the small ones of `parts` into parts of up to `COMPACT_ROWS` rows (each key
        once within a part); returns the parts there are now. Parts merged before to near
        that size are left alone, and one group is held at a time, so a compaction holds no
        more for a million cached answers than for a hundred thousand.

        A merged part is written whole before any part in it is deleted, so a crash in
        between leaves rows twice (harmless: lookups take one), never lost. Parts that
        workers write meanwhile are not among `parts` and stay. An unreadable part is left
        where it is, unread (as lookups treat it)."""
        with _COMPACTING.setdefault(self.root, threading.Lock()):
            group, rows = [], 0  # (part, table) read and not yet merged
            for part in [p for p in parts if not _full(p)]:
                table = self._read(part, missing_ok=True)
                if table is None:
                    continue  # unreadable (left there), or compacted away by another caller
                group.append((part, table))
                rows += table.num_rows
                if rows >= COMPACT_ROWS:
                    self._merge(group)
                    group, rows = [], 0
            if len(group) > 1:
                self._merge(group)
            return self.parts()

    def _merge(self, group: list[tuple[str, pa.Table]]) -> None:
        """Write `group`'s rows as one part, each key once, then delete the group's parts."""
        table = pa.concat_tables([t for _, t in group])
        _, first = np.unique(table["key"].to_numpy(zero_copy_only=False), return_index=True)
        table = table.take(pa.array(np.sort(first)))
        name = f"part-{MERGED}{table.num_rows}-{uuid.uuid4().hex}.parquet"
        fs.write_bytes(self.fs, fs.join(self.path, name), parquet_bytes(table))
        for part, _ in group:
            try:
                fs.delete(self.fs, part)
            except FileNotFoundError:
                pass
        self.log(f"[cache] compacted {len(group)} parts into one ({table.num_rows} "
                 f"responses)")

    def _read(self, part: str, missing_ok: bool = False) -> pa.Table | None:
        """The part's rows; None (reported) when it cannot be read, or is gone."""
        try:
            return read_parquet(self.fs, part, schema=CACHED)
        except FileNotFoundError:
            if not missing_ok:
                self.log(f"[cache] part {part.rsplit('/', 1)[-1]} is gone")
            return None
        except (OSError, pa.ArrowException) as exc:
            self.log(f"[cache] skipping unreadable part {part.rsplit('/', 1)[-1]}: {exc}")
            return None

    def add(self, rows: list[dict]) -> None:
        """Store rows (key, output, prompt_tokens, completion_tokens) as one new part."""
        if not rows:
            return
        table = pa.Table.from_pylist([{f.name: r[f.name] for f in CACHED} for r in rows],
                                     schema=CACHED)
        fs.write_bytes(self.fs, fs.join(self.path, f"part-{uuid.uuid4().hex}.parquet"),
                       parquet_bytes(table))

    def store(self, requests: pa.Table, generated: pa.Table) -> None:
        """Store the answered rows of a generated batch, keyed by the requests' CACHE_KEY
        column (rows that failed are not stored: they are retried next time)."""
        keys = dict(zip(requests.column("request_id").to_pylist(),
                        requests.column(CACHE_KEY).to_pylist()))
        self.add([{**r, "key": keys[r["request_id"]]} for r in generated.to_pylist()
                  if not r["error"]])


def _full(part: str) -> bool:
    """A merged part of half `COMPACT_ROWS` or more: merging it again would only copy it."""
    name = part.rsplit("/", 1)[-1]
    if not name.startswith(f"part-{MERGED}"):
        return False
    rows = name[len(f"part-{MERGED}"):].split("-", 1)[0]
    return rows.isdigit() and int(rows) >= COMPACT_ROWS // 2
