"""Job entry point for `ray job submit -- python -m jobs.run --config CONFIG [overrides]`.

On a cluster, `ray.address: auto` in the config (or the override) joins the cluster the job
was submitted to.
"""

from __future__ import annotations

import argparse
import sys

from engine.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.run")
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="overrides such as rounds=3")
    args = parser.parse_args(argv)
    return cli_main(["run", args.config, *args.overrides])


if __name__ == "__main__":  # vLLM starts worker processes: keep the guard
    sys.exit(main())
