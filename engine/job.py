"""Running a job: preflight (every check before Ray starts), then the driver actor's rounds."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import yaml

from engine import fs
from engine.compare import format_compare, write_compare
from engine.config import ApiConfig, RunConfig, StrategyConfig, load_config
from engine.console import Console
from engine.errors import ConfigError, EngineError, JobInterrupted, UnitsFailed, root_cause
from engine.generation.openai_api import Secret
from engine.local_ray import init_local
from engine.metrics import format_table
from engine.models import check_model, parameter_count, resolve_model
from engine.generation.backend import teacher_serves_student
from engine.placement import cluster_nodes, fit_problems
from engine.provenance import read_run_record, save_run_record
from engine.rerun import affected_stages, changed_fields
from engine.storage import RunStorage
from engine.strategies import REGISTRY, needs_validation, strategy_class, unit_settings
from engine.tasks import TASK_TYPES, build_task, check_tasks, resolve_task_config
from engine.tasks.base import Splits
from engine.tasks.classification import ClassificationTask
from engine.tasks.row_checks import row_problems


@dataclass
class Prepared:
    cfg: RunConfig
    student_model: str  # local HF folder of the base student
    teacher_model: str  # local HF folder of the teacher, or the API's model name
    # task -> its seed, test, validation (only where a unit mines them) and guard rows
    splits: dict[str, Splits]
    api_key: Secret | None = None  # the API teacher's key, read from its environment variable
    # --rerun-affected: task -> the first stage (of round 0) the config change affects
    rerun: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # printed, not fatal (disk space)


def preflight(config_path: str | None, overrides: list[str],
              rerun_affected: bool = False, resolve_models: bool = True) -> Prepared:
    """Validate config, tasks, data and models; report every problem at once.

    rerun_affected: a run_dir saved with a different config is not refused; the stages the
    changes affect are listed in `Prepared.rerun` (run_job moves them aside and redoes them).
    resolve_models: False (`llm2llm check`) leaves model names as given: a hub model is not
    downloaded to be checked.
    """
    cfg = load_config(config_path, overrides)
    problems = check_tasks(cfg.tasks, cfg.seed)
    problems += [] if problems else _check_strategies(cfg) + _check_student_kind(cfg)
    refused, label_fit_notes = ([], []) if problems else _check_label_fit(cfg)
    problems += refused
    problems += check_model(cfg.student.model, "student.model")
    api = cfg.teacher.api
    problems += _check_api_key(api) if api else check_model(cfg.teacher.model, "teacher.model")
    storage_problem = _check_storage(cfg.run_dir)
    problems += [storage_problem] if storage_problem else []
    changed = [] if storage_problem else changed_fields(cfg)
    if changed and not rerun_affected:
        problems.append(
            f"run_dir {cfg.run_dir!r} holds a run with a different config (changed: "
            f"{', '.join(changed)}); use a new run_dir, restore those values, or pass "
            f"--rerun-affected to redo the stages they affect (the old ones are kept under "
            f"{cfg.run_dir}/superseded/)")
    if problems:
        raise ConfigError(problems)
    # Read the data here: malformed rows fail before any work, and the driver actor gets the
    # rows themselves, so it need not see the same files from whichever node it lands on.
    strategies = _task_strategies(cfg)
    tasks = {t.name: build_task(t, cfg.seed) for t in cfg.tasks}
    splits = {t.name: tasks[t.name].splits(validation=needs_validation(cfg, t))
              for t in cfg.tasks}
    row_warnings = []
    for name, (seed, test, held_out, guard) in splits.items():
        data = tasks[name].cfg.data
        sources = {"train": data.train, "test": data.test, "validation": data.validation}
        found, warned = row_problems(name, seed, held_out, test, tasks[name].shared_test_rows,
                                     cfg.train.max_seq_len, sources, guard)
        problems += found
        row_warnings += warned
    if problems:
        raise ConfigError(problems)
    too_small = [f"tasks.{name}: {len(seed)} seed row(s) cannot be split over "
                 f"{cfg.train.num_workers} train workers; raise n_seed or lower train.num_workers"
                 for name, (seed, *_) in splits.items()
                 if 0 < len(seed) < cfg.train.num_workers]
    too_small += [f"tasks.{name}: no validation rows for {s.name} to mine (mine_from: "
                  f"validation); set data.validation, or leave rows of train beyond the seed"
                  for name, (_, _, held_out, _) in splits.items() for s in strategies[name]
                  if s.mine_from == "validation" and not held_out][:1]
    too_small += [f"tasks.{name}: no validation rows to choose the epoch on (train."
                  f"select_epoch: validation); set data.validation or tasks.<i>.n_validation, "
                  f"or leave rows of train beyond the seed"
                  for name, (_, _, held_out, _) in splits.items()
                  if cfg.train.select_epoch == "validation" and not held_out]
    too_small += _split_problems(cfg, splits, strategies)
    if too_small:
        raise ConfigError(too_small)
    resolve = resolve_model if resolve_models else (lambda name: name)
    student = resolve(cfg.student.model)
    if api:
        teacher = cfg.teacher.model
    elif cfg.teacher.model == cfg.student.model:
        teacher = student
    else:
        teacher = resolve(cfg.teacher.model)
    key = Secret(os.environ[api.api_key_env]) if api and api.api_key_env else None
    return Prepared(cfg, student, teacher, splits, key, rerun=affected_stages(cfg, changed),
                    warnings=row_warnings + label_fit_notes + _check_disk(cfg, student))


def _split_problems(cfg: RunConfig, splits: dict,
                    strategies: dict[str, list[StrategyConfig]]) -> list[str]:
    """Splits a run cannot use, each named with its file: fewer seed rows than n_seed asks
    for, none where a strategy trains on them, fewer guard rows than n_guard asks for, no
    test rows."""
    problems = []
    for t in cfg.tasks:
        seed, test, _, guard = splits[t.name]
        task = resolve_task_config(t)
        train, needs_seed = task.data.train or "its built-in rows", any(
            strategy_class(s.name).uses_seed and task.n_seed != 0
            for s in strategies[t.name])
        if task.n_seed and len(seed) < task.n_seed:
            problems.append(f"tasks.{t.name}: n_seed is {task.n_seed} but {train} gives only "
                            f"{len(seed)} row(s); lower n_seed or give more training rows")
        elif needs_seed and not seed:
            problems.append(f"tasks.{t.name}: no seed rows ({train} has none); give training "
                            f"rows, or n_seed: 0 with {_seed_writers()}, which write a seed")
        if len(guard) < task.n_guard:
            problems.append(f"tasks.{t.name}: n_guard is {task.n_guard} but {train} gives only "
                            f"{len(guard)} row(s) after the seed and n_validation rows; lower "
                            f"n_guard (0: ship the last round) or give more training rows")
        if not test:
            source = task.data.test or "its built-in rows"
            problems.append(f"tasks.{t.name}: no test rows ({source} gives none after the "
                            f"seed and validation rows); give test rows (data.test) so each "
                            f"round can be scored")
    return problems


def disk_needed(cfg: RunConfig, model_bytes: int) -> int:
    """About how many bytes a run writes: a saved student for every unit and round (round-0
    copies in a compare included; seed_only trains once), plus, with checkpoints on, one
    training's checkpoint at a time (fp32 weights and Adam's two moments: about 6x a 16-bit
    model's files). Stage tables are small beside them."""
    trainings = sum(strategy_class(settings.name).rounds(cfg.rounds)
                    for task in cfg.tasks for *_, settings in unit_settings(cfg, task))
    checkpoint = 6 * model_bytes if cfg.train.checkpoint_every != "never" else 0
    return trainings * model_bytes + checkpoint


def _check_disk(cfg: RunConfig, student: str) -> list[str]:
    """A warning when a local run_dir has less free space than the run may write."""
    folder = Path(student)
    if not folder.is_dir() or not fs.is_local(RunStorage(cfg.run_dir).fs):
        return []
    weights = sum(f.stat().st_size for f in folder.iterdir()
                  if f.suffix in (".safetensors", ".bin", ".pt"))
    needed, free = disk_needed(cfg, weights), fs.free_bytes(cfg.run_dir)
    if free is None or free >= needed:
        return []
    return [f"run_dir {cfg.run_dir!r} has {free / 2**30:.1f} GiB free; this run may write "
            f"about {needed / 2**30:.1f} GiB (a {weights / 2**20:.0f} MiB student saved per "
            f"unit and round, plus checkpoints). Free space or point run_dir elsewhere; a run "
            f"that fills the disk stops with the path and resumes when run again"]


def _task_strategies(cfg: RunConfig) -> dict[str, list[StrategyConfig]]:
    """task -> the strategy settings of its units (one per compare entry; the first seed's)."""
    return {t.name: [settings for _, seed, _, settings in unit_settings(cfg, t)
                     if seed == (cfg.compare.seeds[0] if cfg.compare else cfg.seed)]
            for t in cfg.tasks}


def _check_strategies(cfg: RunConfig) -> list[str]:
    """Each task has what its strategies need (each strategy's own task_problems: a prompt
    template, a classification task), a labelled seed for those that train on one, and a
    round to train on a synthetic seed."""
    problems, strategies = [], _task_strategies(cfg)
    for i, t in enumerate(cfg.tasks):
        kinds = {s.name: strategy_class(s.name) for s in strategies[t.name]}
        task = build_task(t, cfg.seed)
        for cls in kinds.values():
            problems += cls.task_problems(task, i)
        for settings in strategies[t.name]:  # the real first texts s3 writes on (pair tasks)
            try:
                strategy_class(settings.name)(settings).first_texts(task)
            except ValueError as exc:
                if f"tasks.{i}: {exc}" not in problems:
                    problems.append(f"tasks.{i}: {exc}")
        no_seed = task.cfg.n_seed == 0
        need_seed = sorted(n for n, c in kinds.items() if c.uses_seed and not c.synthesizes_seed)
        if no_seed and need_seed:
            problems.append(f"tasks.{i} ({t.name}): n_seed is 0 (no labelled seed) but "
                            f"{', '.join(need_seed)} train(s) on labelled seed rows; give "
                            f"n_seed > 0 or use {_seed_writers()}, which synthesize a seed")
        synthesizes = any(not c.uses_seed or (c.synthesizes_seed and no_seed)
                          for c in kinds.values() if c.uses_teacher)
        if synthesizes and cfg.rounds < 2:
            problems.append(f"rounds: {cfg.rounds}, but {t.name}'s synthetic seed is written "
                            f"in round 0 and first trained on in round 1; set rounds >= 2")
    return problems


def _check_label_fit(cfg: RunConfig) -> tuple[list[str], list[str]]:
    """The label-fit gate asked for (a +label_fit entry, strategy.label_fit or
    teacher.label_fit.enabled set to true) on tasks it cannot judge: a pair's label is a
    relation between its texts, which the nearest real rows do not show, and a generated
    answer is worked out, not a class a text is. Such a unit runs as if the gate were off.
    (problems, warnings): where no task of the job can be judged the request would change
    nothing, a problem; where some can, a warning naming the others. The default (off, or on
    for a job that did not set it) asks for nothing here."""
    said = "enabled" in cfg.teacher.label_fit.model_fields_set and cfg.teacher.label_fit.enabled
    asking, unjudged = [], {}
    for t in cfg.tasks:
        names = sorted({name for name, _, _, s in unit_settings(cfg, t)
                        if strategy_class(s.name).uses_teacher
                        and (s.label_fit if s.label_fit is not None else said)})
        if not names:
            continue
        asking.append(t.name)
        task = build_task(t, cfg.seed)
        if not task.labels_name_text:
            unjudged[t.name] = (names, "a sentence-pair task (its label is a relation between "
                                       "its two texts, which the nearest real rows do not "
                                       "show)" if isinstance(task, ClassificationTask) else
                                "not a classification task (its answers are worked out, "
                                "not a class a text is)")
    if not unjudged:
        return [], []
    lines = [f"tasks.{name}: {name} is {why}: the label-fit gate (asked for by "
             f"{', '.join(n for n in names if '+label_fit' in n) or _label_fit_setting(cfg)}) "
             f"judges nothing there, so its units would run as without it"
             for name, (names, why) in unjudged.items()]
    if len(unjudged) < len(asking):
        return [], lines
    return [line + "; leave +label_fit (strategy.label_fit, teacher.label_fit.enabled) out "
                   "of this job, or add a single-text classification task for it to judge"
            for line in lines], []


def _label_fit_setting(cfg: RunConfig) -> str:
    return ("strategy.label_fit" if cfg.strategy.label_fit or any(
        t.strategy and t.strategy.label_fit for t in cfg.tasks) else "teacher.label_fit.enabled")


def _seed_writers() -> str:
    """The registered strategies that can write their own seed ("s3 / zerogen")."""
    return " / ".join(name for name, cls in REGISTRY.items() if cls.synthesizes_seed)


def _check_student_kind(cfg: RunConfig) -> list[str]:
    """An encoder student answers with a label: classification tasks only."""
    if cfg.student.kind != "sequence_classification":
        return []
    return [f"tasks.{i} ({t.name}): type {resolve_task_config(t).type} needs a generating "
            f"student; student.kind sequence_classification is for classification tasks "
            f"(run this task in a job of its own with student.kind causal_lm)"
            for i, t in enumerate(cfg.tasks)
            if not issubclass(TASK_TYPES[resolve_task_config(t).type], ClassificationTask)]


def _check_storage(run_dir: str) -> str | None:
    local = Path(run_dir).expanduser() if "://" not in run_dir else None
    unsafe = {Path("/"): "the filesystem's root", Path.home().resolve(): "your home directory"}
    if local is not None and local.resolve() in unsafe:
        return (f"run_dir {run_dir!r} is {unsafe[local.resolve()]}: a run writes and clears its "
                f"stage folders there; give a directory of its own, e.g. runs/<name>")
    if local is not None and local.exists() and not local.is_dir():
        return f"run_dir {run_dir!r} is a file; give a directory (new, or a run's to resume)"
    try:
        store = RunStorage(run_dir)
        store.exists(store.root)
    except (OSError, ValueError, pa.ArrowException) as exc:
        return (f"run_dir {run_dir!r}: cannot open it ({str(exc).splitlines()[0]}); use a local "
                f"path or a pyarrow filesystem URI such as s3://bucket/path (credentials from "
                f"the environment, as for any AWS/GCS client)")
    try:
        record = read_run_record(run_dir)
    except (yaml.YAMLError, UnicodeDecodeError):
        record = "not YAML"  # as foreign as YAML that is no record
    if record is not None and not (isinstance(record, dict) and isinstance(
            record.get("config"), dict)):
        return (f"run_dir {run_dir!r} holds a config.yaml that is not a run's record; use "
                f"another run_dir, or move that file away if the directory is meant for runs")
    return None


def _check_api_key(api: ApiConfig) -> list[str]:
    if api.api_key_env and not os.environ.get(api.api_key_env):
        return [f"teacher.api.api_key_env: environment variable {api.api_key_env} is not set; "
                f"export it before running (the key itself never goes in the config), or set "
                f"api_key_env: null for a server that needs no key"]
    return []


def start_ray(cfg: RunConfig, verbose: bool = True) -> None:
    """Join the configured cluster, the one a `ray job submit` job runs in, or start a fresh
    local instance. Workers' output (vLLM, DeepSpeed, Ray Data) reaches this process's
    console only if `verbose`; it is always in the workers' log files."""
    import ray

    if cfg.ray.address:
        ray.init(address=cfg.ray.address, log_to_driver=verbose)
    elif os.environ.get("RAY_ADDRESS"):  # set by Ray for jobs submitted with `ray job submit`
        ray.init(log_to_driver=verbose)
    else:
        # The dashboard stays on: Ray Train's placement-group cleaner polls the state API it
        # serves.
        init_local(cfg.ray.num_cpus, log_to_driver=verbose)
    if not verbose:
        quiet_worker_count_warnings()


# The raylet warns each time the workers it started pass a multiple of the core count; Ray
# Data's actors and tasks pass it all the time here (one warning a minute in a compare). It
# cannot be turned off (ray-project/ray#63800) and stays in the raylet's log file.
WORKER_COUNT_WARNING = re.compile(r"worker processes have been started on node")


def quiet_worker_count_warnings() -> None:
    """Drop the raylet's worker-count warning from this process's console (the driver prints
    the raylet's messages itself, log_to_driver or not); every other raylet message stays."""
    try:  # no public API filters them
        from ray._private import worker
        print_to_stdstream = worker.print_to_stdstream
    except (ImportError, AttributeError):
        return
    if getattr(print_to_stdstream, "quiet", False):
        return

    def filtered(data, *args, **kwargs):
        lines = [line for line in data.get("lines", []) if not WORKER_COUNT_WARNING.search(line)]
        if lines:
            print_to_stdstream({**data, "lines": lines}, *args, **kwargs)
    filtered.quiet = True
    worker.print_to_stdstream = filtered


def link_worker_logs(store: RunStorage) -> str:
    """Where this Ray session's worker logs are, linked from <run_dir>/logs/ when both are on
    this machine. Returns the path to tell the user."""
    import ray

    try:  # no public API names the session's log folder
        logs = ray._private.worker.global_worker.node.get_logs_dir_path()
    except AttributeError:
        return "/tmp/ray/session_latest/logs on the head node"
    if not fs.is_local(store.fs):
        return logs
    link = Path(store.path("logs")) / Path(logs).parent.name
    try:
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(logs, target_is_directory=True)
        return str(link)
    except OSError:
        return logs


def claim_run_dir(store: RunStorage, run_dir: str, exit_wait_s: float = 30) -> None:
    """Refuse a run_dir another live run is using (each would clear the other's stages), and
    mark it as this run's (a heartbeat from this process until the driver's own beats).
    exit_wait_s: how long a process on this machine gets to finish exiting (a killed job's)."""
    other = store.other_run(exit_wait_s=exit_wait_s)
    if other:
        raise ConfigError([f"run_dir {run_dir!r} is in use by another run ({other}); wait for "
                           f"it to finish (`llm2llm status {run_dir}`), stop it, or use "
                           f"another run_dir"])
    store.write_heartbeat()


def chosen_dtypes(cfg) -> list[str]:
    """One line per vLLM role whose dtype `auto` chose, saying what and why."""
    lines = []
    for name, role in (("teacher", cfg.teacher), ("student", cfg.student)):
        on_vllm = role.api is None if name == "teacher" else role.kind == "causal_lm"
        if on_vllm and role._dtype_chosen:
            why = "GPU" if role.use_gpu else "this CPU has native bfloat16" \
                if role.dtype == "bfloat16" else "this CPU has no native bfloat16"
            lines.append(f"{name}: dtype {role.dtype} (auto, {why}; set {name}.dtype to "
                         f"choose)")
    return lines


def run_job(config_path: str | None, overrides: list[str],
            rerun_affected: bool = False, verbose: bool = False) -> list[dict]:
    """Preflight, save config, start Ray, run the driver actor; show its progress and a table
    per round. `verbose`: the workers' own output too."""
    prepared = preflight(config_path, overrides, rerun_affected)
    from engine.tracking import open_tracker

    tracker = open_tracker(prepared.cfg)  # a tracking server that does not answer stops us here
    store = RunStorage(prepared.cfg.run_dir)
    claim_run_dir(store, prepared.cfg.run_dir)
    tasks = {t.name: t for t in prepared.cfg.tasks}
    for task, stage in prepared.rerun.items():
        for _, _, key, _ in unit_settings(prepared.cfg, tasks[task]):
            moved_to = store.location(store.supersede(key, stage))
            print(f"config changed: {key} redoes round 0 from {stage} on; the previous "
                  f"stages are kept in {moved_to}", flush=True)
    for warning in prepared.warnings:
        print(f"warning: {warning}", flush=True)
    if prepared.cfg.train.chosen:  # `auto` settings: say what this run trains with, once
        kind = "GPU" if prepared.cfg.train.use_gpu else "CPU"
        print(f"train: {', '.join(f'{k} {v}' for k, v in prepared.cfg.train.chosen.items())} "
              f"(auto, for {kind} training; set train.<setting> to choose)", flush=True)
    for line in chosen_dtypes(prepared.cfg):
        print(line, flush=True)
    save_run_record(prepared.cfg, prepared.student_model, prepared.teacher_model)
    if tracker:
        tracker.sync()  # a resumed run: the rounds finished before, if MLflow lacks them
    start_ray(prepared.cfg, verbose)
    if prepared.cfg.ray.check_fit:
        cfg = prepared.cfg
        problems = fit_problems(cfg, cluster_nodes(), student_parameters=parameter_count(
            prepared.student_model), student_on_teacher=teacher_serves_student(
            cfg.student, cfg.teacher, prepared.student_model, prepared.teacher_model))
        if problems:
            raise ConfigError(problems)
    import ray
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from engine.driver_actor import DriverActor

    console, logs = Console(), link_worker_logs(store)
    console.line(f"worker logs (vLLM, DeepSpeed, Ray): {logs}"
                 + ("" if verbose else "; --verbose shows them here"))
    # The driver actor and its event queue hold no CPU, so Ray could place them on any node;
    # they live on this process's node (the head, for `ray job submit`): a worker node that
    # goes away takes engines and train workers with it, which are started again elsewhere,
    # never the actor that runs the rounds.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    start, history = time.time(), []
    events = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    driver = DriverActor.options(scheduling_strategy=here).remote(
        prepared.cfg, prepared.student_model, prepared.teacher_model, prepared.splits,
        prepared.api_key, events, os.getpid())
    failed = None
    try:
        for round_metrics in _rounds(driver, events, console, prepared.cfg.run_dir):
            history += round_metrics
            console.line(f"\n=== {_who(round_metrics, prepared.cfg)}round "
                         f"{round_metrics[0]['round']} done ({time.time() - start:.0f}s) ===")
            console.line(format_table(history))
            for m in round_metrics:
                if m.get("stop_reason"):
                    console.line(f"{m['unit']} stops after round {m['round']}: "
                                 f"{m['stop_reason']}")
            if prepared.cfg.compare:
                console.line(f"\n{format_compare(write_compare(prepared.cfg))}")
            if tracker:
                tracker.sync()
    except UnitsFailed as exc:  # the others finished: report them, then the failures
        failed = exc
    except EngineError:
        console.line(f"details in the worker logs: {logs}")
        raise
    console.line(f"\nrun {'ended, with failures,' if failed else 'finished'} in "
                 f"{time.time() - start:.0f}s; artifacts in "
                 f"{prepared.cfg.run_dir}")
    try:
        from engine.report import write_report

        console.line(f"report: {write_report(prepared.cfg.run_dir)}")
    except Exception as exc:  # noqa: BLE001 - the run is done; a report can be made later
        console.line(f"report not written ({exc}); `llm2llm report {prepared.cfg.run_dir}` "
                     f"tries again")
    if tracker:
        tracker.finish(failed=failed is not None)
        console.line(f"tracking: {len(tracker.run_ids)} MLflow run(s) in experiment "
                     f"{prepared.cfg.tracking.experiment_name(prepared.cfg.run_dir)!r} at "
                     f"{tracker.uri}")
    if failed is not None:
        console.line(f"details in the worker logs: {logs}")
        raise failed
    return history


def _who(round_metrics: list[dict], cfg: RunConfig) -> str:
    """Whose round just finished, when tasks run side by side and finish rounds apart:
    "trec: " (a task), "sst2 seed 1: " (a compare's task and training seed); "" when the
    whole job moves round by round."""
    if cfg.parallel == 1 or (len(cfg.tasks) == 1 and not cfg.compare):
        return ""
    m = round_metrics[0]
    return f"{m['task']}" + (f" seed {m['train_seed']}" if cfg.compare else "") + ": "


def _rounds(driver, events, console: Console, run_dir: str):
    """Yield each round's metrics from the driver actor as it finishes, showing the events
    it sends meanwhile."""
    import ray

    def show_events() -> None:
        waiting = events.size()
        for event in events.get_nowait_batch(waiting) if waiting else ():
            console.show(event)

    rounds = driver.run.remote()
    while True:
        ready, _ = ray.wait([rounds], timeout=0.5)
        show_events()
        if not ready:
            continue
        try:
            ref = next(rounds)
            round_metrics = ray.get(ref)
        except StopIteration:
            show_events()
            return
        except ray.exceptions.RayTaskError as exc:
            show_events()
            # the driver's own error, as it was raised (EngineError pickles with its arguments)
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, EngineError) else exc) from None
        except ray.exceptions.RayActorError as exc:  # its process or node died
            raise JobInterrupted(
                f"the driver actor died ({root_cause(exc).split('. ')[0]}); every finished "
                f"stage, stored answer and training checkpoint is kept in {run_dir}: run the "
                f"same command again to resume") from None
        show_events()
        yield round_metrics
