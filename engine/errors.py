"""User-facing errors. Each names where the problem is, the bad value, and the fix."""

import re


class EngineError(Exception):
    """Base class: the CLI prints these as one clear message and exits non-zero."""


class ConfigError(EngineError):
    """The config (YAML or overrides) is invalid. Holds every problem found, not just the first."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid config ({len(problems)} problem(s)):\n{lines}")


class DataError(EngineError):
    """A data file is missing or malformed."""


class ModelError(EngineError):
    """A model path or name cannot be resolved."""


class StageError(EngineError):
    """A stage got input it cannot work with (missing columns, empty set, dead engine)."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"[{stage}] {message}")


class JobInterrupted(EngineError):
    """The job stopped part-way (its driver died); running the same command resumes it."""


def root_cause(exc: BaseException) -> str:
    """The root error of a Ray error chain in one line: its last `SomethingError: message` line
    and the detail lines after it, without the traceback."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    heads = [i for i, line in enumerate(lines) if re.match(r"[\w.]*(Error|Exception)\b", line)]
    if not heads:
        return lines[-1][:600] if lines else type(exc).__name__
    detail = [line for line in lines[heads[-1]:]
              if not line.startswith(("File ", "^", "For further information"))]
    return " ".join(detail)[:600]
