"""Where a run's wall time went, per stage, from the MANIFEST.json every finished stage writes.

    python -m benchmarks.stage_time runs/trec_encoder --json results/stage_time.json

Per stage: how many ran, their summed seconds (stages of units side by side overlap, so the
sum exceeds the wall time), the share of the summed stage time, and for train stages the
seconds inside the step loop (the rest is Ray Train's start, model load and save, and waiting
for room), and the trainings' phases summed (workers starting, set-up, steps, save, copy, Ray
Train's own) where their manifests record them. `wall_s` runs from the first stage's start to
the last one's end; `busy_s` is the time at least one stage was running (a run resumed across
sessions has gaps), `mean_in_flight` the stages running on average while any was.
A stage shared between units (round 0 of a compare) is counted once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import report


def stage_times(run_dir: Path) -> dict:
    spans, per_stage = [], {}
    for manifest in sorted(run_dir.rglob("MANIFEST.json")):
        record = json.loads(manifest.read_text())
        # a shared stage (round 0 of a compare) ran once; the other units' copies say so
        if "copied_from" in record or "started_at" not in record:
            continue
        stage = record.get("stage", manifest.parent.name)
        entry = per_stage.setdefault(stage, {"count": 0, "seconds": 0.0})
        entry["count"] += 1
        entry["seconds"] += record["finished_at"] - record["started_at"]
        if stage == "train":
            info = record.get("info", {})
            entry["loop_seconds"] = entry.get("loop_seconds", 0.0) + \
                float(info.get("train_seconds", 0.0))
            # where each training's wall time went (engines since 2026-12-06 record it)
            for phase, seconds in info.get("phases", {}).items():
                phases = entry.setdefault("phases", {})
                phases[phase] = phases.get(phase, 0.0) + float(seconds)
        spans.append((record["started_at"], record["finished_at"]))
    if not spans:
        raise SystemExit(f"no finished stage under {run_dir}")
    total = sum(e["seconds"] for e in per_stage.values())
    for entry in per_stage.values():
        entry["share"] = round(entry["seconds"] / total, 3)
        entry["seconds"] = round(entry["seconds"], 1)
        if "loop_seconds" in entry:
            entry["loop_seconds"] = round(entry["loop_seconds"], 1)
        if "phases" in entry:
            entry["phases"] = {k: round(v, 1) for k, v in entry["phases"].items()}
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    busy, reach = 0.0, start
    for s, e in sorted(spans):  # the union of the stages' spans
        if e > reach:
            busy += e - max(s, reach)
            reach = e
    return {"run_dir": str(run_dir), "wall_s": round(end - start, 1), "busy_s": round(busy, 1),
            "stage_seconds": round(total, 1), "mean_in_flight": round(total / busy, 2),
            "stages": per_stage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(stage_times(args.run_dir), args.json)


if __name__ == "__main__":
    main()
