"""User-facing errors. Each names where the problem is, the bad value, and the fix."""

import re


class EngineError(Exception):
    """Base class: the CLI prints these as one clear message and exits non-zero."""

    def __reduce__(self):
        # An error raised in a Ray actor (the driver) reaches the CLI pickled; unpickling calls
        # the class with `args`, so a subclass with its own __init__ keeps its own arguments.
        return type(self), getattr(self, "_init_args", self.args)


class ConfigError(EngineError):
    """The config (YAML or overrides) is invalid. Holds every problem found, not just the first."""

    def __init__(self, problems: list[str]):
        self.problems, self._init_args = problems, (problems,)
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid config ({len(problems)} problem(s)):\n{lines}")


class DataError(EngineError):
    """A data file is missing or malformed."""


class ModelError(EngineError):
    """A model path or name cannot be resolved."""


class PlacementError(EngineError):
    """Workers of a stage lost their node, and the nodes left had no room for them in time."""


class StageError(EngineError):
    """A stage got input it cannot work with (missing columns, empty set, dead engine)."""

    def __init__(self, stage: str, message: str):
        self._init_args = (stage, message)
        super().__init__(f"[{stage}] {message}")


class StorageError(EngineError):
    """The run directory cannot take a write: the disk is full, or it is not writable."""

    def __init__(self, path: str, reason: str, needed: int | None = None,
                 free: int | None = None):
        self.path, self.needed, self.free = path, needed, free
        self._init_args = (path, reason, needed, free)
        amounts = ""
        if needed is not None:
            amounts = f" ({_size(needed)} to write" + (
                f", {_size(free)} free)" if free is not None else ")")
        super().__init__(
            f"cannot write {path}: {reason}{amounts}. Free space there (or give a run_dir "
            f"with room) and run the same command again: finished stages are kept, and "
            f"nothing half-written is ever read back")


# errno values that mean "no room" or "not writable", and what to tell the user for each
DISK_FULL = {28: "no space left on the device", 122: "the disk quota is exceeded",
             30: "the file system is read-only", 13: "permission denied"}
_DISK_FULL_TEXT = re.compile(r"No space left on device|Disk quota exceeded|Read-only file system")


def storage_problem(exc: BaseException) -> str:
    """What a write failure means for the user, if it is one of DISK_FULL (also found in the
    text of an error raised in another process, such as a train worker's); else ""."""
    full = in_chain(exc, OSError, test=lambda e: e.errno in DISK_FULL)
    if full is not None:
        return DISK_FULL[full.errno]
    match = _DISK_FULL_TEXT.search(str(exc))
    return match.group(0).lower() if match else ""


def in_chain(exc: BaseException, *types: type, test=lambda e: True) -> BaseException | None:
    """The first error of `types` (passing `test`) in exc's chain of causes (Ray wraps a
    worker's error in its own: a RayTaskError is also an instance of the error it carries)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, types) and test(exc):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class UnitsFailed(EngineError):
    """Some units (tasks) of a job failed; the others finished. Each failure is kept in its
    round folder (FAILED.json) and shown by `llm2llm status`."""

    def __init__(self, failures: dict[str, str]):
        self.failures, self._init_args = failures, (failures,)
        lines = "\n".join(f"  - {key}: {reason}" for key, reason in failures.items())
        super().__init__(f"{len(failures)} unit(s) failed; the others finished:\n{lines}\n"
                         f"Fix the cause and run the same command again: finished stages "
                         f"are kept, and only what failed (and what follows it) is redone")


class JobInterrupted(EngineError):
    """The job stopped part-way (its driver died); running the same command resumes it."""


def root_cause(exc: BaseException) -> str:
    """The root error of a Ray error chain in one line: its last `SomethingError: message` line
    and the detail lines after it, without the traceback."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # Ray's OOM killer explains itself over many lines, none of them an `...Error:` line
    if any("running low on memory" in line for line in lines):
        measured = re.search(r"Memory on the node .*? was ([\d.]+GB) used / ([\d.]+GB)",
                             str(exc))
        usage = f" ({measured.group(1)} of {measured.group(2)} in use)" if measured else ""
        return (f"Ray's out-of-memory killer stopped a worker: the node ran out of memory"
                f"{usage}. Run less at once: "
                f"parallel: 1 (tasks one after another), fewer train.num_workers or replicas, "
                f"a lower gpu_memory_utilization on CPU, or a larger train.memory_per_worker "
                f"so trainings wait for room")
    heads = [i for i, line in enumerate(lines) if re.match(r"[\w.]*(Error|Exception)\b", line)]
    if not heads:
        return lines[-1][:600] if lines else type(exc).__name__
    detail = [line for line in lines[heads[-1]:]
              if not line.startswith(("File ", "^", "For further information"))]
    return " ".join(detail)[:600]
