"""`llm2llm` command line: `llm2llm run CONFIG [key.sub=value ...]`, `llm2llm check ...`,
`llm2llm status RUN_DIR`, `llm2llm inspect RUN_DIR`, `llm2llm report RUN_DIR`,
`llm2llm export RUN_DIR --out DIR`, `llm2llm config [SECTION]`."""

from __future__ import annotations

import argparse
import sys

from engine.errors import EngineError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm2llm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in [("run", "run a job: rounds of train, predict, mine, augment"),
                            ("check", "validate config, tasks, data and models; start nothing")]:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("config", help="YAML config file (see jobs/configs/)")
        p.add_argument("overrides", nargs="*", help="overrides such as train.lr=1e-4")
        p.add_argument("--rerun-affected", action="store_true",
                       help="if run_dir holds a run with a different config, redo the stages "
                            "the changes affect (the old ones are kept under "
                            "run_dir/superseded/) instead of refusing")
        p.add_argument("--verbose", action="store_true",
                       help="show the workers' own output (vLLM, DeepSpeed, Ray) here too; "
                            "it is always in the worker logs")
    p = sub.add_parser("compare", help="strategies x training seeds over the config's tasks, "
                                       "in one job; prints and writes compare.json",
                       description=strategies_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config file (see jobs/configs/)")
    p.add_argument("overrides", nargs="*", help="overrides such as train.lr=1e-4")
    p.add_argument("--strategies",
                   help="comma-separated names, each with any switches after a '+', e.g. "
                        "llm2llm,random,seed_only,llm2llm+one_shot (listed above); default: "
                        "the config's compare.strategies")
    p.add_argument("--seeds", help="training seeds, e.g. 0,1,2; default: the config's "
                                   "compare.seeds, else 0,1,2")
    p.add_argument("--match", choices=["targets", "requests", "rows"],
                   help="what the baselines match of plain llm2llm's (else s3's) round: the "
                        "rows it asked about (the default), its teacher requests, or the rows "
                        "it accepted (compare.match)")
    p.add_argument("--rerun-affected", action="store_true",
                   help="as for run")
    p.add_argument("--verbose", action="store_true", help="as for run")
    p = sub.add_parser("status", help="per task and round: which stages are done, running or "
                                      "missing")
    p.add_argument("run_dir", help="a job's run_dir")
    p = sub.add_parser("inspect", help="the errors a round mined, the rows the teacher wrote "
                                       "for each with verdicts, and which were fixed")
    p.add_argument("run_dir", help="a job's run_dir")
    p.add_argument("--task", help="a task, or a compare's unit such as trec/llm2llm/seed_0")
    p.add_argument("--round", type=int, help="every row of this round (default: a summary "
                                             "per round)")
    p.add_argument("--row", help="one row (a seed row's id) in full")
    p = sub.add_parser("report", help="write a self-contained report.html of a run: accuracy, "
                                      "fix rate, teacher rows, tokens and time, sample rows")
    p.add_argument("run_dir", help="a job's run_dir")
    p.add_argument("--out", help="where to write it (default: <run_dir>/report.html)")
    p = sub.add_parser("export", help="a round's training set (a datasets folder and parquet, "
                                      "with lineage and a dataset card) and its student (a "
                                      "transformers folder with a model card)")
    p.add_argument("run_dir", help="a job's run_dir")
    p.add_argument("--out", required=True, help="folder to write into, one subfolder per unit")
    p.add_argument("--task", help="a task, or a compare's unit such as trec/llm2llm/seed_0 "
                                  "(default: every unit)")
    p.add_argument("--round", type=int, help="the round to export (default: the one best on "
                                             "the task's guard rows, tasks.<i>.n_guard; "
                                             "without them, the last one whose student "
                                             "finished training)")
    p.add_argument("--merge", action="store_true",
                   help="a LoRA student's adapter merged into its base, as a full transformers "
                        "model (default: the adapter folder, loaded with peft)")
    p = sub.add_parser("config", help="every setting with its type, default and meaning")
    p.add_argument("section", nargs="?", default="",
                   help="only settings under this dotted prefix, e.g. teacher or train.lr")
    return parser


def strategies_help() -> str:
    """Every registered strategy and switch by name (engine/strategies/), for `compare --help`."""
    from engine.config import SWITCHES
    from engine.strategies import REGISTRY

    switches = {name: ", ".join(f"{k}={v}" for k, v in fields.items())
                for name, fields in SWITCHES.items()}
    switches["scale=X"] = "budget_scale=X (a matched budget times X, e.g. zerogen+scale=3)"
    switches.update({f"{key}=X": f"{field}=X ({name} only)" for name, cls in REGISTRY.items()
                     for key, field in cls.options.items()})
    width = max(map(len, [*REGISTRY, *switches]))
    lines = ["strategies:"] + [f"  {name.ljust(width)}  {cls.summary}"
                               for name, cls in REGISTRY.items()]
    lines += ["", "switches, after a name (e.g. llm2llm+one_shot+continue):"]
    lines += [f"  {name.ljust(width)}  sets {fields}" for name, fields in switches.items()]
    closed = [f"{name} takes " + (", ".join(cls.own_switches) + " only"
                                  if cls.own_switches else "none")
              for name, cls in REGISTRY.items() if not cls.takes_switches]
    return "\n".join(lines + [f"  ({c})" for c in closed])


def print_settings(section: str) -> int:
    from engine.config import describe_settings

    rows = [r for r in describe_settings()
            if not section or r[0] == section or r[0].startswith(section + ".")]
    if not rows:
        print(f"llm2llm: error: no setting named {section!r}; run `llm2llm config` for all",
              file=sys.stderr)
        return 2
    for path, type_name, default, description in rows:
        head = f"{path}: {type_name}" + (f" = {default}" if default else "")
        print(head + (f"\n    {description}" if description else ""))
    return 0


def compare_overrides(args: argparse.Namespace) -> list[str]:
    """`llm2llm compare`'s overrides: the flags given, over the config's `compare` section.
    Without --strategies the config must list them (else a plain run would start)."""
    from engine.config import load_config
    from engine.errors import ConfigError

    if not args.strategies and load_config(args.config, args.overrides).compare is None:
        raise ConfigError([f"{args.config} has no compare section: name the strategies, "
                           f"e.g. --strategies llm2llm,random,seed_only"])
    flags = {"strategies": args.strategies and f"[{args.strategies}]",
             "seeds": args.seeds and f"[{args.seeds}]", "match": args.match}
    return args.overrides + [f"compare.{key}={value}" for key, value in flags.items() if value]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come before or after flags; argparse leaves the later ones unparsed.
    args, extra = parser.parse_known_args(argv)
    if any(a.startswith("-") or "=" not in a for a in extra) or (
            extra and args.command in ("status", "inspect", "report", "export", "config")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "config":
        return print_settings(args.section)
    if extra:
        args.overrides += extra
    from engine.job import preflight, run_job
    from engine.models import BUILTIN_MODELS, looks_like_path

    try:
        if args.command == "export":
            from engine.export import export_run

            for unit_dir in export_run(args.run_dir, args.out, args.task, args.round,
                                       merge=args.merge):
                print(f"exported {unit_dir}: dataset/, train.parquet, README.md, model/")
        elif args.command == "report":
            from engine.report import write_report

            print(f"report written to {write_report(args.run_dir, args.out)}")
        elif args.command == "inspect":
            from engine.inspect import inspect_run

            print(inspect_run(args.run_dir, args.task, args.round, args.row))
        elif args.command == "status":
            from engine.status import format_status

            print(format_status(args.run_dir))
        elif args.command == "check":
            prepared = preflight(args.config, args.overrides, args.rerun_affected,
                                 resolve_models=False)
            print(f"config OK: {len(prepared.cfg.tasks)} task(s), {prepared.cfg.rounds} round(s)")
            for role in ("student", "teacher"):
                name = getattr(prepared.cfg, role).model
                if not looks_like_path(name) and name not in BUILTIN_MODELS and (
                        role == "student" or prepared.cfg.teacher.api is None):
                    print(f"  {role}.model {name!r}: a hub name, downloaded when the job runs")
            for task, stage in prepared.rerun.items():
                print(f"  {task}: would redo round 0 from {stage} on, and every later round")
            for warning in prepared.warnings:
                print(f"  warning: {warning}")
        elif args.command == "compare":
            # A compare is a run with a `compare` section: resumable and re-plannable like any.
            # A flag overrides the config's section; without one, the config's value stands.
            run_job(args.config, compare_overrides(args), args.rerun_affected, args.verbose)
        else:
            run_job(args.config, args.overrides, args.rerun_affected, args.verbose)
    except EngineError as exc:
        print(f"llm2llm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what finished is on disk; no traceback to read
        resume = " (the finished stages are kept: run the same command to resume)" \
            if args.command in ("run", "compare") else ""
        print(f"llm2llm: interrupted{resume}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
