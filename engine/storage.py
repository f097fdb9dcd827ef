"""The run directory: Parquet parts, stage manifests, metrics. Every write is atomic.

Layout (DESIGN.md):
    <run_dir>/config.yaml
    <run_dir>/<task>/round_<r>/<stage>/part-0.parquet + MANIFEST.json (written last)
    <run_dir>/<task>/round_<r>/<stage>/_resume/       an unfinished stage's checkpoints
    <run_dir>/<task>/round_<r>/metrics.json
    <run_dir>/cache/responses/part-<uuid>.parquet   generated responses, by content key

A stage whose MANIFEST.json exists, and whose files match the sizes it records, is complete; a
stage folder without one is leftover from a crash and is never read as data.
"""

from __future__ import annotations

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
# State that lets an interrupted stage continue rather than start over (training checkpoints):
# kept when the stage is begun again, removed once it is finished.
RESUME_DIR = "_resume"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new, never half


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
        """A readable manifest whose files are all there at the sizes it recorded: a part
        truncated or replaced after the manifest was written makes the stage incomplete."""
        try:
            manifest = self.read_manifest(stage_dir)
            return all((stage_dir / name).stat().st_size == size
                       for name, size in manifest["files"].items())
        except (OSError, ValueError, KeyError, AttributeError):
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
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        _atomic_write_bytes(path, sink.getvalue().to_pybytes())
        return path

    def read_table(self, stage_dir: Path, name: str = "part-0") -> pa.Table:
        return pq.read_table(stage_dir / f"{name}.parquet")

    def finish_stage(self, stage_dir: Path, stage: str, **info) -> dict:
        """Write the manifest last: from here on the stage counts as done."""
        shutil.rmtree(stage_dir / RESUME_DIR, ignore_errors=True)  # no longer needed
        files = {p.name: p.stat().st_size for p in sorted(stage_dir.iterdir())
                 if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST}
        manifest = {"stage": stage, "finished_at": time.time(), "files": files, **info}
        _atomic_write_bytes(stage_dir / MANIFEST, json.dumps(manifest, indent=2).encode())
        return manifest

    def read_manifest(self, stage_dir: Path) -> dict:
        return json.loads((stage_dir / MANIFEST).read_text())

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
        _atomic_write_bytes(path, json.dumps(obj, indent=2, default=str).encode())

    def write_text(self, path: Path, text: str) -> None:
        _atomic_write_bytes(path, text.encode())
