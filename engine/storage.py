"""The run directory: Parquet parts, stage manifests, metrics. Every write is atomic.

Layout (DESIGN.md):
    <run_dir>/config.yaml
    <run_dir>/<task>/round_<r>/<stage>/part-0.parquet + MANIFEST.json (written last)
    <run_dir>/<task>/round_<r>/<stage>/_resume/       an unfinished stage's checkpoints
    <run_dir>/<task>/round_<r>/metrics.json
    <run_dir>/cache/responses/part-<uuid>.parquet   generated responses, by content key

A stage whose MANIFEST.json exists, and whose files match the sizes and checksums it records,
is complete; a stage folder without one is leftover from a crash and is never read as data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "MANIFEST.json"
STAGES = ["data", "train", "predict", "mine", "augment"]  # one round's stages, in order
# State that lets an interrupted stage continue rather than start over (training checkpoints):
# kept when the stage is begun again, removed once it is finished.
RESUME_DIR = "_resume"


# Files above this size (model weights, written by their own libraries) are checked by size
# only: hashing gigabytes on every resume would cost more than it protects.
CHECKSUM_MAX_BYTES = 1 << 30


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never half, even after a power loss:
    the data is on disk (fsync) before the rename makes it visible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def parquet_bytes(table: pa.Table) -> bytes:
    """A Parquet file with a CRC per page, so a flipped byte fails the read (read_parquet)
    instead of decoding into a different value."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, write_page_checksum=True)
    return sink.getvalue().to_pybytes()


def read_parquet(path: Path, **kwargs) -> pa.Table:
    return pq.read_table(path, page_checksum_verification=True, **kwargs)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_entry(path: Path) -> dict:
    size = path.stat().st_size
    return {"bytes": size, **({"sha256": _sha256(path)} if size <= CHECKSUM_MAX_BYTES else {})}


def _matches(path: Path, entry) -> bool:
    if isinstance(entry, int):  # a manifest from an engine version that recorded sizes only
        return path.stat().st_size == entry
    return (path.stat().st_size == entry["bytes"]
            and ("sha256" not in entry or _sha256(path) == entry["sha256"]))


class RunStorage:
    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir).expanduser().resolve()

    # -- paths ----------------------------------------------------------------------------
    def round_dir(self, task: str, round_: int) -> Path:
        return self.root / task / f"round_{round_}"

    def stage_dir(self, task: str, round_: int, stage: str) -> Path:
        return self.round_dir(task, round_) / stage

    def cache_dir(self) -> Path:
        """Generated responses, shared by every task and round (engine/generation/cache.py)."""
        return self.root / "cache" / "responses"

    # -- stage outputs --------------------------------------------------------------------
    def is_complete(self, stage_dir: Path) -> bool:
        """A readable manifest whose files are all there with the sizes and checksums it
        recorded: a part truncated, zero-filled or replaced after the manifest was written
        makes the stage incomplete, so it is done again rather than read."""
        try:
            manifest = self.read_manifest(stage_dir)
            return all(_matches(stage_dir / name, entry)
                       for name, entry in manifest["files"].items())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False

    def begin_stage(self, stage_dir: Path) -> None:
        """Clear leftovers of an interrupted attempt so they cannot mix with the new output,
        except its RESUME_DIR."""
        stage_dir.mkdir(parents=True, exist_ok=True)  # called only for unfinished stages
        for entry in stage_dir.iterdir():
            if entry.name == RESUME_DIR:
                continue
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def write_table(self, stage_dir: Path, table: pa.Table, name: str = "part-0") -> Path:
        path = stage_dir / f"{name}.parquet"
        atomic_write_bytes(path, parquet_bytes(table))
        return path

    def read_table(self, stage_dir: Path, name: str = "part-0") -> pa.Table:
        return read_parquet(stage_dir / f"{name}.parquet")

    def finish_stage(self, stage_dir: Path, stage: str, **info) -> dict:
        """Write the manifest last: from here on the stage counts as done. It records every
        file of the stage (the trained model's included) with its size and checksum."""
        shutil.rmtree(stage_dir / RESUME_DIR, ignore_errors=True)  # no longer needed
        files = {p.relative_to(stage_dir).as_posix(): _file_entry(p)
                 for p in sorted(stage_dir.rglob("*"))
                 if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST}
        manifest = {"stage": stage, "finished_at": time.time(), "files": files, **info}
        atomic_write_bytes(stage_dir / MANIFEST, json.dumps(manifest, indent=2).encode())
        return manifest

    def read_manifest(self, stage_dir: Path) -> dict:
        return json.loads((stage_dir / MANIFEST).read_text())

    def supersede(self, task: str, first_stage: str) -> Path:
        """Move a task's outputs from round 0's `first_stage` on (and every later round) to
        <run_dir>/superseded/<time>/, so they are redone; nothing is deleted. Returns that
        folder."""
        dest = self.root / "superseded" / time.strftime("%Y%m%d-%H%M%S")
        round0 = self.round_dir(task, 0)
        moves = [round0 / s for s in STAGES[STAGES.index(first_stage):]]
        moves.append(round0 / "metrics.json")
        moves += [d for d in (self.root / task).glob("round_*") if d != round0]
        for src in moves:
            if src.exists():
                target = dest / src.relative_to(self.root)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, target)
        return dest

    # -- liveness -------------------------------------------------------------------------
    def write_heartbeat(self, finished: bool = False) -> None:
        """The driver's sign of life, read by `llm2llm status` (engine/status.py)."""
        self.write_json(self.root / "HEARTBEAT.json",
                        {"time": time.time(), "host": socket.gethostname(), "pid": os.getpid(),
                         "finished": finished})

    def read_heartbeat(self) -> dict | None:
        try:
            return json.loads((self.root / "HEARTBEAT.json").read_text())
        except (OSError, ValueError):
            return None

    # -- json documents -------------------------------------------------------------------
    def write_json(self, path: Path, obj) -> None:
        atomic_write_bytes(path, json.dumps(obj, indent=2, default=str).encode())

    def write_text(self, path: Path, text: str) -> None:
        atomic_write_bytes(path, text.encode())
