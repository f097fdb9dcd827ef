"""`llm2llm status RUN_DIR`: per task and round, which stages are done, running or missing.

A stage is *done* when its manifest checks out (RunStorage.is_complete), *running* when its
folder exists without one and the job's driver has written a heartbeat recently, and
*interrupted* when the folder exists but the driver has gone quiet: re-running the same
command redoes that stage (a generation stage only for the rows not in the response cache).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from engine.config import StrategyConfig
from engine.console import text_table
from engine.generation.cache import ResponseCache
from engine.provenance import saved_run
from engine.storage import STAGES, STALE_AFTER_S, RunStorage
from engine.strategies import build_strategy, saved_units



def stage_states(run_dir: str | Path, now: float | None = None) -> tuple[list[dict], dict]:
    """Rows of {task, round, <stage>: state, metrics: bool}, and facts about the driver."""
    store = RunStorage(run_dir)
    saved = saved_run(str(run_dir))
    config = saved.get("config", {})
    beat = store.read_heartbeat()
    age = None if beat is None else (now or time.time()) - beat["time"]
    alive = age is not None and age < STALE_AFTER_S and not beat.get("finished")
    rows = []
    rounds = int(config.get("rounds", 0))
    for key, settings in saved_units(config):
        strategy = build_strategy(StrategyConfig(**settings))
        for r in range(strategy.rounds(rounds)):
            rows.append(_unit_row(store, key, r, not strategy.augments(r, rounds), alive))
            if rows[-1]["stopped"]:
                break  # the unit's later rounds will not run
    driver = {"heartbeat_age_s": age, "alive": alive,
              "finished": bool(beat and beat.get("finished")), "host": beat and beat.get("host"),
              "pid": beat and beat.get("pid"),
              "cache_parts": len(ResponseCache(store.cache_dir()).parts())}
    return rows, driver


def _unit_row(store: RunStorage, key: str, r: int, no_teacher: bool, alive: bool) -> dict:
    row = {"task": key, "round": r}
    for stage in STAGES:
        stage_dir = store.stage_dir(key, r, stage)
        if stage == "augment" and no_teacher:
            row[stage] = "-"  # the last round does not ask the teacher, nor does seed_only
        elif store.is_complete(stage_dir):
            row[stage] = "done"
        elif store.exists(stage_dir):
            row[stage] = "running" if alive else "interrupted"
        else:
            row[stage] = "missing"
    text = store.read_text(f"{store.round_dir(key, r)}/metrics.json")
    row["metrics"] = text is not None
    row["stopped"] = json.loads(text).get("stop_reason", "") if text else ""
    failure = store.read_text(f"{store.round_dir(key, r)}/FAILED.json")
    if failure and not text:
        row["stopped"] = f"failed: {json.loads(failure)['error']}"
    if row["stopped"] and no_teacher is False and row["augment"] == "missing":
        row["augment"] = "-"  # the budget was spent before this round could ask
    return row


def format_status(run_dir: str | Path) -> str:
    rows, driver = stage_states(run_dir)
    headers = ["task", "round", *STAGES, "metrics"]
    cells = [[str(r["task"]), str(r["round"]), *(r[s] for s in STAGES),
              "yes" if r["metrics"] else "no"] for r in rows]
    stops = [f"{r['task']} stopped after round {r['round']}: {r['stopped']}"
             for r in rows if r["stopped"]]
    if driver["finished"]:
        state = "finished"
    elif driver["alive"]:
        state = f"running (driver process {driver['pid']} on {driver['host']}, last " \
                f"heartbeat {driver['heartbeat_age_s']:.0f}s ago; it holds the run_dir)"
    elif driver["heartbeat_age_s"] is None:
        state = "not started"
    else:
        state = (f"stopped (last heartbeat {driver['heartbeat_age_s']:.0f}s ago); run the same "
                 f"command again to resume")
    head = [f"run {run_dir}: {state}",
            f"response cache: {driver['cache_parts']} part(s)", ""]
    return "\n".join(head + [text_table(headers, cells, align="left")]
                     + ([""] + stops if stops else []))
