"""Where a run directory lives: a local path, or any pyarrow filesystem URI (`s3://bucket/run`,
`gs://...`, `hdfs://...`, `abfs://...`, `file:///...`; S3-compatible stores take
`?endpoint_override=host:port&scheme=http` in the URI).

Paths inside a filesystem are POSIX strings. Writes are atomic either way: on a local disk a
temporary file is flushed to disk and renamed; an object store publishes an object only when
its upload completes, so a reader sees the whole new object or none.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from engine.errors import StorageError, storage_problem

_FILESYSTEMS: dict[str, pafs.FileSystem] = {}  # one client per store, shared in a process


def is_uri(location: str) -> bool:
    return "://" in str(location)


def open_fs(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI."""
    location = str(location)
    if not is_uri(location):
        return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
    parts = urlsplit(location)
    store = f"{parts.scheme}://{parts.netloc}?{parts.query}"
    if store not in _FILESYSTEMS:
        _FILESYSTEMS[store] = pafs.FileSystem.from_uri(location)[0]
    fs = _FILESYSTEMS[store]
    if isinstance(fs, pafs.LocalFileSystem):  # file:///...
        return fs, parts.path
    return fs, (parts.netloc + parts.path).rstrip("/")


def child(location: str, *names: str) -> str:
    """The location of a file or folder under `location`, keeping a URI's query string."""
    rel = "/".join(names)
    if not is_uri(location):
        return str(Path(location).expanduser() / rel)
    parts = urlsplit(location)
    uri = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/{rel}"
    return f"{uri}?{parts.query}" if parts.query else uri


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def join(*parts: str | os.PathLike) -> str:
    return "/".join(str(p).rstrip("/") for p in parts if str(p))


def info(fs: pafs.FileSystem, path: str) -> pafs.FileInfo:
    return fs.get_file_info(path)


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return info(fs, path).type != pafs.FileType.NotFound


def is_file(fs: pafs.FileSystem, path: str) -> bool:
    return info(fs, path).type == pafs.FileType.File


def is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return info(fs, path).type == pafs.FileType.Directory


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Atomically: readers see the old file or the whole new one, even after a power loss."""
    parent = path.rsplit("/", 1)[0]
    if not is_local(fs):
        try:  # an object is published whole when its upload completes
            with fs.open_output_stream(path) as f:
                f.write(data)
        except FileNotFoundError:  # a store with real folders (HDFS): make them, once
            fs.create_dir(parent, recursive=True)
            with fs.open_output_stream(path) as f:
                f.write(data)
        return
    tmp = f"{parent}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp"
    try:
        fs.create_dir(parent, recursive=True)
        write_local(tmp, data)
        os.replace(tmp, path)
    except OSError as exc:
        reason = storage_problem(exc)
        if not reason:
            raise
        with contextlib.suppress(OSError):  # a part-written temporary file is never read
            os.remove(tmp)
        raise StorageError(path, reason, len(data), free_bytes(parent)) from exc


def write_local(path: str, data: bytes) -> None:
    """Write and flush a local file: the data is on disk before a rename makes it visible."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def free_bytes(path: str) -> int | None:
    """Free space of the local file system holding `path` (its nearest existing folder)."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def sha256(fs: pafs.FileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(fs: pafs.FileSystem, path: str, recursive: bool = False) -> list[pafs.FileInfo]:
    """Files under a folder (none if it does not exist), sorted by path."""
    selector = pafs.FileSelector(path, allow_not_found=True, recursive=recursive)
    return sorted((i for i in fs.get_file_info(selector) if i.type == pafs.FileType.File),
                  key=lambda i: i.path)


def listing_digest(files: list[pafs.FileInfo], root: str) -> str:
    """A digest of files' names (relative to root), sizes and modification times: it changes
    when a folder is rewritten, without reading the files."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.path[len(root):].lstrip('/')}:{f.size}:{f.mtime_ns}\n".encode())
    return digest.hexdigest()


def list_dir(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    return sorted(fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)),
                  key=lambda i: i.path)


def delete(fs: pafs.FileSystem, path: str) -> None:
    kind = info(fs, path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)


def move(fs: pafs.FileSystem, src: str, dst: str) -> None:
    fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
    if is_local(fs):
        os.replace(src, dst)
        return
    copy_tree(fs, src, fs, dst)  # object stores move objects, not folders
    delete(fs, src)


def copy_tree(src_fs: pafs.FileSystem, src: str, dst_fs: pafs.FileSystem, dst: str) -> None:
    """Copy a file, or a folder's files, between any two filesystems."""
    files = list_files(src_fs, src, recursive=True) if is_dir(src_fs, src) else [info(src_fs, src)]
    for f in files:
        target = dst + f.path[len(src):]
        dst_fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(f.path, target, source_filesystem=src_fs, destination_filesystem=dst_fs)


def cache_dir() -> Path:
    """This node's cache of converted models and fetched folders (LLM2LLM_CACHE)."""
    return Path(os.environ.get("LLM2LLM_CACHE", Path.home() / ".cache" / "llm2llm")).expanduser()


def localize(location: str) -> str:
    """A local folder with the contents of `location`: the path itself when it is local, else
    a copy in this node's cache (vLLM and transformers load models from local folders).
    The copy is keyed by the folder's file names, sizes and times, so a rewritten folder is
    fetched again, and it is made under a temporary name and renamed when whole."""
    if not is_uri(location):
        return location
    fs, path = open_fs(location)
    if is_local(fs):
        return path
    files = list_files(fs, path, recursive=True)
    if not files:
        raise FileNotFoundError(f"{location}: no files there")
    key = hashlib.sha256(f"{location}|{listing_digest(files, path)}".encode()).hexdigest()
    local = cache_dir() / "remote" / key[:24]
    if not local.is_dir():
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex}")
        copy_tree(fs, path, pafs.LocalFileSystem(), str(tmp))
        try:
            os.replace(tmp, local)
        except OSError:  # another process on this node fetched it first
            shutil.rmtree(tmp, ignore_errors=True)
    return str(local)
