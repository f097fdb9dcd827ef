"""User-facing errors. Each names where the problem is, the bad value, and the fix."""


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
