"""A run directory that fills up mid-run: the error names the path and the space, nothing
half-written is read back, and a re-run with space gives the undisturbed result."""

import errno
import json
import os

import pytest

import engine.fs
from engine.errors import StorageError, storage_problem
from tests.unit.test_driver import make_loop


def results(run_dir):
    """Every round's metrics, without timings, and every stage's tables' row counts."""
    out = {}
    for path in sorted(run_dir.rglob("metrics.json")):
        m = json.loads(path.read_text())
        out[str(path.relative_to(run_dir))] = {k: v for k, v in m.items()
                                               if k not in ("stage_seconds", "seconds")}
    return out


def test_a_full_disk_fails_the_stage_by_name_and_the_rerun_resumes(tmp_path, monkeypatch):
    clean, _, _, _ = make_loop(tmp_path / "clean")
    list(clean.run())

    room = {"left": 40_000}  # bytes this "disk" takes before it is full
    real_write = engine.fs.write_local

    def filling(path, data):
        if len(data) > room["left"]:
            with open(path, "wb") as f:  # a part written, as a real full disk leaves it
                f.write(data[: room["left"]])
            room["left"] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        room["left"] -= len(data)
        real_write(path, data)

    monkeypatch.setattr(engine.fs, "write_local", filling)
    loop, _, _, _ = make_loop(tmp_path / "full")
    with pytest.raises(StorageError) as caught:
        list(loop.run())
    message = str(caught.value)
    assert "no space left on the device" in message and str(tmp_path / "full") in message
    assert "to write" in message and "run the same command again" in message
    leftovers = [p for p in (tmp_path / "full").rglob(".*.tmp")]
    assert leftovers == []  # the part-written temporary file is gone

    monkeypatch.setattr(engine.fs, "write_local", real_write)  # space again
    again, _, _, _ = make_loop(tmp_path / "full")
    list(again.run())
    assert results(tmp_path / "full" / "run") == results(tmp_path / "clean" / "run")


def test_disk_full_is_recognized_in_another_process_s_error_text():
    assert storage_problem(OSError(errno.EDQUOT, "quota")) == "the disk quota is exceeded"
    wrapped = RuntimeError("train worker failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert storage_problem(wrapped) == "no space left on the device"
    assert storage_problem(RuntimeError("RayTaskError: OSError: [Errno 28] No space left on "
                                        "device: '/run/x/model.safetensors'")) == \
        "no space left on device"
    assert storage_problem(ValueError("bad value")) == ""


def test_preflight_warns_when_the_run_dir_has_less_room_than_the_run_may_write(
        tmp_path, monkeypatch):
    from engine.config import RunConfig
    from engine.job import _check_disk, disk_needed

    student = tmp_path / "student"
    student.mkdir()
    (student / "model.safetensors").write_bytes(b"x" * 1000)
    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "rounds": 3, "tasks": [{"name": "arithmetic"}],
        "compare": {"strategies": ["llm2llm", "seed_only"], "seeds": [0, 1]},
        "train": {"checkpoint_every": "epoch"}})
    # llm2llm trains 3 rounds, seed_only once, for 2 seeds; one checkpoint at a time
    assert disk_needed(cfg, 1000) == 2 * (3 + 1) * 1000 + 6 * 1000
    assert _check_disk(cfg, str(student)) == []  # this disk has room
    monkeypatch.setattr(engine.fs, "free_bytes", lambda path: 5000)
    warning, = _check_disk(cfg, str(student))
    assert "has 0.0 GiB free; this run may write about 0.0 GiB" in warning
    assert "resumes when run again" in warning


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real tmpfs mounted for the test (root on Linux); its size is set by the test."""
    import subprocess

    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs (needs root); the "
                    "wrapper test above covers the same path")

    def resize(size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)

    yield mount, resize
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_tmpfs_that_fills_mid_run_fails_by_name_and_resumes_with_space(
        tmp_path, small_tmpfs):
    mount, resize = small_tmpfs
    clean, _, _, _ = make_loop(tmp_path / "clean")
    list(clean.run())
    # what the clean run takes on a tmpfs: each file in whole 4 KiB pages
    written = sum(-(-p.stat().st_size // 4096) * 4096
                  for p in (tmp_path / "clean").rglob("*") if p.is_file())
    resize(written // 2 // 4096 * 4096)  # room for the first half only
    with pytest.raises(StorageError) as caught:
        list(make_loop(mount)[0].run())
    message = str(caught.value)
    assert "no space left on the device" in message and str(mount) in message
    assert list(mount.rglob(".*.tmp")) == []  # nothing half-written left to read back
    assert list(mount.rglob("MANIFEST.json"))  # it filled mid-run: some stages were done
    resize(written * 4)  # space again: the same run resumes to the undisturbed result
    list(make_loop(mount)[0].run())
    assert results(mount / "run") == results(tmp_path / "clean" / "run")
