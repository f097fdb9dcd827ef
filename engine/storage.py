"""The run directory: Parquet parts, stage manifests, metrics. Every write is atomic.

It may be a local path or any pyarrow filesystem URI (engine/fs.py).

Layout (docs: what a round does):
    <run_dir>/config.yaml
    <run_dir>/<task>/round_<r>/<stage>/part-0.parquet + MANIFEST.json (written last)
    <run_dir>/<task>/round_<r>/<stage>/_resume/       an unfinished stage's checkpoints
    <run_dir>/<task>/round_<r>/metrics.json
    <run_dir>/cache/responses/part-<uuid>.parquet   generated responses, by content key

A stage whose MANIFEST.json exists, and whose files match the sizes and checksums it records,
is complete; a stage folder without one is leftover from a crash and is never read as data.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine import fs

# The stages of a round, in the order they run: one folder each under round_<r>/.
STAGES = ["data", "train", "predict", "mine", "augment"]
MANIFEST = "MANIFEST.json"
# State that lets an interrupted stage continue rather than start over (training checkpoints):
# kept when the stage is begun again, removed once it is finished.
RESUME_DIR = "_resume"


# The driver writes a heartbeat this often; one older than STALE_AFTER_S is a run that died.
HEARTBEAT_EVERY_S = 20
STALE_AFTER_S = 3 * HEARTBEAT_EVERY_S


def _alive(pid) -> bool:
    """Whether process `pid` runs on this machine (a zombie, exited but not yet reaped by a
    container's init, does not)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError, OverflowError):
        return True  # someone else's process, or no pid to tell by: assume it runs
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc here: it answered the signal


# Files above this size (model weights, written by their own libraries) are checked by size
# only: hashing gigabytes on every resume would cost more than it protects.
CHECKSUM_MAX_BYTES = 1 << 30


def parquet_bytes(table: pa.Table) -> bytes:
    """A Parquet file with a CRC per page, so a flipped byte fails the read (read_parquet)
    instead of decoding into a different value."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, write_page_checksum=True)
    return sink.getvalue().to_pybytes()


def read_parquet(fs: pafs.FileSystem, path: str, **kwargs) -> pa.Table:
    return pq.read_table(path, filesystem=fs, page_checksum_verification=True, **kwargs)


class RunStorage:
    """The run directory on its filesystem (engine/fs.py). Paths are strings in that
    filesystem; `location()` turns one into what other processes open (a path or a URI)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = str(run_dir)
        self.fs, self.root = fs.open_fs(self.run_dir)

    # -- paths ----------------------------------------------------------------------------
    def path(self, *names: str) -> str:
        return fs.join(self.root, *names)

    def round_dir(self, unit: str, round_: int) -> str:
        """A unit's round folder; `unit` is its key (the task's name in a plain run)."""
        return self.path(unit, f"round_{round_}")

    def stage_dir(self, unit: str, round_: int, stage: str) -> str:
        return fs.join(self.round_dir(unit, round_), stage)

    def cache_dir(self) -> str:
        """Generated responses, shared by every task and round (engine/generation/cache.py)."""
        return self.location(self.path("cache", "responses"))

    def location(self, path: str) -> str:
        """A path of this storage as a local path or a URI, for another process to open."""
        if fs.is_local(self.fs) and not fs.is_uri(self.run_dir):
            return path
        return fs.child(self.run_dir, path[len(self.root):].lstrip("/"))

    def exists(self, path: str) -> bool:
        return fs.exists(self.fs, path)

    # -- stage outputs --------------------------------------------------------------------
    def is_complete(self, stage_dir: str) -> bool:
        """A readable manifest whose files are all there with the sizes and checksums it
        recorded: a part truncated, zero-filled or replaced after the manifest was written
        makes the stage incomplete, so it is done again rather than read."""
        try:
            manifest = self.read_manifest(stage_dir)
            return all(self._matches(fs.join(stage_dir, name), entry)
                       for name, entry in manifest["files"].items())
        except (OSError, ValueError, KeyError, TypeError, AttributeError, pa.ArrowException):
            return False

    def _matches(self, path: str, entry) -> bool:
        size = fs.info(self.fs, path).size
        if isinstance(entry, int):  # a manifest from an engine version that recorded sizes only
            return size == entry
        return size == entry["bytes"] and (
            "sha256" not in entry or fs.sha256(self.fs, path) == entry["sha256"])

    def begin_stage(self, stage_dir: str) -> None:
        """Clear leftovers of an interrupted attempt so they cannot mix with the new output,
        except its RESUME_DIR."""
        self.fs.create_dir(stage_dir, recursive=True)  # called only for unfinished stages
        for entry in fs.list_dir(self.fs, stage_dir):
            if entry.base_name != RESUME_DIR:
                fs.delete(self.fs, entry.path)

    def write_table(self, stage_dir: str, table: pa.Table, name: str = "part-0") -> str:
        path = fs.join(stage_dir, f"{name}.parquet")
        fs.write_bytes(self.fs, path, parquet_bytes(table))
        return path

    def read_table(self, stage_dir: str, name: str = "part-0") -> pa.Table:
        return read_parquet(self.fs, fs.join(stage_dir, f"{name}.parquet"))

    def has_table(self, stage_dir: str, name: str) -> bool:
        return fs.is_file(self.fs, fs.join(stage_dir, f"{name}.parquet"))

    def finish_stage(self, stage_dir: str, stage: str, **info) -> dict:
        """Write the manifest last: from here on the stage counts as done. It records every
        file of the stage (the trained model's included) with its size and checksum."""
        fs.delete(self.fs, fs.join(stage_dir, RESUME_DIR))  # no longer needed
        files = {}
        for entry in fs.list_files(self.fs, stage_dir, recursive=True):
            name = entry.path[len(stage_dir):].lstrip("/")
            if entry.base_name.startswith(".") or name == MANIFEST:
                continue
            files[name] = {"bytes": entry.size, **(
                {"sha256": fs.sha256(self.fs, entry.path)}
                if entry.size <= CHECKSUM_MAX_BYTES else {})}
        manifest = {"stage": stage, "finished_at": time.time(), "files": files, **info}
        self.write_json(fs.join(stage_dir, MANIFEST), manifest)
        return manifest

    def copy_stage(self, source: str, stage_dir: str) -> None:
        """Another finished stage's files into `stage_dir`, without its manifest: the caller
        finishes the copy as a stage of its own."""
        for entry in fs.list_files(self.fs, source, recursive=True):
            name = entry.path[len(source):].lstrip("/")
            if name != MANIFEST:
                fs.copy_tree(self.fs, entry.path, self.fs, fs.join(stage_dir, name))

    def read_manifest(self, stage_dir: str) -> dict:
        return json.loads(fs.read_bytes(self.fs, fs.join(stage_dir, MANIFEST)))

    def supersede(self, unit: str, first_stage: str) -> str:
        """Move a unit's outputs from round 0's `first_stage` on (and every later round) to
        <run_dir>/superseded/<time>/, so they are redone; nothing is deleted. Returns that
        folder."""
        dest = self.path("superseded", time.strftime("%Y%m%d-%H%M%S"))
        round0 = self.round_dir(unit, 0)
        moves = [fs.join(round0, s) for s in STAGES[STAGES.index(first_stage):]]
        moves.append(fs.join(round0, "metrics.json"))
        moves += [d.path for d in fs.list_dir(self.fs, self.path(unit))
                  if d.base_name.startswith("round_") and d.path != round0]
        for src in moves:
            if self.exists(src):
                fs.move(self.fs, src, fs.join(dest, src[len(self.root):].lstrip("/")))
        return dest

    # -- liveness -------------------------------------------------------------------------
    def other_run(self, now: float | None = None, exit_wait_s: float = 30) -> str:
        """Who else is running on this run directory ("" if nobody): a heartbeat fresher
        than STALE_AFTER_S from a run not finished, whose process is alive where this
        machine can tell (its own host). Two runs on one run_dir clear each other's stages.
        A run whose job process is alive holds the run_dir; one whose job process is gone
        (killed) is going down, and its driver (the heartbeat's `pid`) gets `exit_wait_s` to
        exit first: a killed job's driver actor goes down with its Ray instance, a few
        seconds after the job."""
        beat = self.read_heartbeat()
        if not beat or beat.get("finished"):
            return ""
        age = (now or time.time()) - beat.get("time", 0)
        if age >= STALE_AFTER_S:
            return ""
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(beat.get("started", 0)))
        holder = (f"process {beat.get('pid')} on {beat.get('host')}, started {started}, "
                  f"heartbeat {age:.0f}s ago")
        if beat.get("host") != socket.gethostname():
            return holder  # elsewhere: only the heartbeat's age tells
        job = beat.get("job_pid", beat.get("pid"))
        if job != beat.get("pid") and _alive(job):
            return f"job process {job}, driver {holder}"
        deadline = time.time() + exit_wait_s
        while _alive(beat.get("pid")):
            if time.time() >= deadline:
                return holder
            time.sleep(0.5)
        return ""

    def write_heartbeat(self, finished: bool = False, job_pid: int | None = None,
                        started: float | None = None) -> None:
        """The driver's sign of life, read by `llm2llm status` (engine/status.py) and by a
        second run on this run_dir. job_pid: the process of the job the driver runs for
        (the `llm2llm` command; default: this one); started: when the run started."""
        now = time.time()
        self.write_json(self.path("HEARTBEAT.json"),
                        {"time": now, "host": socket.gethostname(), "pid": os.getpid(),
                         "job_pid": job_pid or os.getpid(), "started": started or now,
                         "finished": finished})

    def read_heartbeat(self) -> dict | None:
        try:
            return json.loads(fs.read_bytes(self.fs, self.path("HEARTBEAT.json")))
        except (OSError, ValueError):
            return None

    # -- documents ------------------------------------------------------------------------
    def write_json(self, path: str, obj) -> None:
        fs.write_bytes(self.fs, path, json.dumps(obj, indent=2, default=str).encode())

    def write_text(self, path: str, text: str) -> None:
        fs.write_bytes(self.fs, path, text.encode())

    def read_text(self, path: str) -> str | None:
        """The file's text, or None if it does not exist."""
        try:
            return fs.read_bytes(self.fs, path).decode()
        except FileNotFoundError:
            return None
