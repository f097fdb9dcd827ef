"""Job entry point for `ray job submit -- python -m jobs.run --config CONFIG [overrides]`.

Under `ray job submit` the job joins the cluster it was submitted to (Ray sets RAY_ADDRESS);
run directly, it starts a local Ray instance unless `ray.address` says otherwise.
"""

from __future__ import annotations

import argparse
import sys

from engine.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.run")
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="overrides such as rounds=3")
    parser.add_argument("--rerun-affected", action="store_true",
                        help="redo the stages a changed config affects instead of refusing")
    parser.add_argument("--verbose", action="store_true",
                        help="show the workers' own output (vLLM, DeepSpeed, Ray) in the job log")
    args = parser.parse_args(argv)
    flags = (["--rerun-affected"] if args.rerun_affected else []) + (
        ["--verbose"] if args.verbose else [])
    return cli_main(["run", args.config, *flags, *args.overrides])


if __name__ == "__main__":  # vLLM starts worker processes: keep the guard
    sys.exit(main())
