"""Side-by-side benchmarks: each runs the engine and a baseline in one process run and prints
ratios (`python -m benchmarks.<name> --help`)."""

import json
from pathlib import Path


def report(result: dict, path: Path | None) -> None:
    """Print a benchmark's result and, if asked, write it as JSON."""
    print(json.dumps(result, indent=2))
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
