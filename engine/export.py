"""`llm2llm export RUN_DIR --out DIR [--task T] [--round R]`: a round's training set and its
student as files other tools load, each with a card saying how it was made.

For every unit (a plain run's task; a compare's task/strategy/seed), under DIR/<unit>/:

  dataset/        the rows the round's student trained on, a Hugging Face `datasets` folder
                  (`datasets.load_from_disk`), seed and synthetic rows with their lineage
  train.parquet   the same rows as one Parquet file
  README.md       the dataset card: task, strategy, teacher and student, gates and what they
                  rejected, the teacher's yield, and the round table
  model/          the round's trained student, a `transformers` folder, with a model card;
                  a LoRA student's adapter folder (`peft`), or with `--merge` the adapter
                  merged into its base (a full `transformers` folder)

The round is the one the unit ships: with guard rows (tasks.<i>.n_guard), the trained round
whose student scored best on them (compare's `chosen`), else the last one whose student
finished training; `--round` says otherwise.
Everything is read from the run's stage tables (any storage the run used, S3 included) and
written to a local folder; nothing in the run directory changes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine import fs
from engine.adapters import adapter_base, is_adapter
from engine.config import TaskConfig
from engine.errors import DataError
from engine.inspect import pick_units, run_units, unit_metrics
from engine.metrics import chosen_round
from engine.provenance import saved_run
from engine.storage import RunStorage

# What each lineage column of an exported row means (written into the dataset card).
COLUMNS = {
    "id": "the row's id; a synthetic row's id starts with the id of the row it was aimed at",
    "task": "the task's name",
    "input": "the text the student reads",
    "target": "what the student is trained to answer",
    "label": "the label (classification) or final answer the target holds",
    "origin": "`seed` (the task's own data) or `synthetic` (written by the teacher)",
    "round": "the round whose teacher request wrote the row (seed rows: -1)",
    "seed_id": "for a synthetic row, the id of the row the teacher was shown: the student's "
               "error it was aimed at (llm2llm), or a row picked without looking (random); "
               "a seed row's own id",
    "trigger_prediction": "the student's wrong answer on that row, which the teacher saw",
    "teacher_model": "the model that wrote the row",
    "prompt_hash": "content hash of the teacher prompt template it was written from",
    "sampling": "the teacher's sampling settings for the request (JSON)",
}


def export_run(run_dir: str, out: str, task: str | None = None,
               round_: int | None = None, merge: bool = False) -> list[Path]:
    """Export every unit `task` picks; returns the unit folders written. Refuses, before
    writing anything, a round that is not trained and an output folder that is not empty.
    `merge`: write a LoRA student merged into its base (default: its adapter)."""
    saved = saved_run(run_dir)
    keys, rounds = run_units(run_dir)
    store = RunStorage(run_dir)
    plans = []
    for key in pick_units(keys, task):
        r = _round_to_export(store, key, rounds, round_)
        dest = Path(out) / key
        if dest.exists() and any(dest.iterdir()):
            raise DataError(f"--out {out}: {dest} already holds files; export to an empty or "
                            f"new folder (nothing was written)")
        plans.append((key, r, dest))
    return [_export_unit(store, saved, key, r, dest, merge) for key, r, dest in plans]


def _round_to_export(store: RunStorage, key: str, rounds: int, round_: int | None) -> int:
    trained = [r for r in range(rounds)
               if store.is_complete(store.stage_dir(key, r, "train"))
               and store.is_complete(store.stage_dir(key, r, "data"))]
    if round_ is None:
        if not trained:
            raise DataError(f"{key}: no round has finished training yet; run `llm2llm status "
                            f"{store.run_dir}` to see where the run is")
        scored = [m for m in unit_metrics(store, key, trained[-1] + 1) if m["round"] in trained]
        chosen = chosen_round(scored)
        return chosen["round"] if chosen else trained[-1]
    if not 0 <= round_ < rounds:
        raise DataError(f"--round {round_}: this run has rounds 0 to {rounds - 1}")
    if round_ not in trained:
        last = f"the last trained round is {trained[-1]}" if trained else "none is yet"
        raise DataError(f"--round {round_}: {key} has not finished training that round "
                        f"({last}); resume the run or export another round")
    return round_


def _export_unit(store: RunStorage, saved: dict, key: str, r: int, dest: Path,
                 merge: bool = False) -> Path:
    import datasets

    rows = store.read_table(store.stage_dir(key, r, "data"))
    history = unit_metrics(store, key, r + 1)
    dest.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows, dest / "train.parquet")
    datasets.disable_progress_bars()  # a bar per save would bury the command's own output
    features = datasets.Features.from_arrow_schema(rows.schema)
    datasets.Dataset.from_dict(rows.to_pydict(), features=features).save_to_disk(
        str(dest / "dataset"))
    model = store.location(fs.join(store.stage_dir(key, r, "train"), "model"))
    adapter = is_adapter(model)
    if adapter and merge:
        merge_adapter(model, dest / "model")
    else:
        fs.copy_tree(*fs.open_fs(model), *fs.open_fs(str(dest / "model")))
    example = rows.column("input")[0].as_py() if rows.num_rows else ""
    context = _Context(saved, key, r, rows, history, _student_prompt(saved, key, example),
                       "adapter" if adapter and not merge else "merged" if adapter else "full")
    (dest / "README.md").write_text(dataset_card(context))
    (dest / "model" / "README.md").write_text(model_card(context))
    return dest


def _student_prompt(saved: dict, key: str, example: str) -> list[dict] | None:
    """The messages the student read for `example`, rendered from the task's prompt file as
    the run did; None if the task can no longer be built here (its data or prompt file
    moved), which only leaves the example out of the model card."""
    from engine.tasks import build_task

    task_name = key.split("/", 1)[0]
    for task_cfg in saved.get("config", {}).get("tasks", []):
        if task_cfg.get("name") == task_name:
            try:
                task = build_task(TaskConfig(**task_cfg), saved.get("seed", 0))
                return task.student_messages(example)
            except Exception:  # noqa: BLE001 - the card says the prompt could not be shown
                return None
    return None


def merge_adapter(adapter: str, out: Path) -> None:
    """The LoRA adapter in folder `adapter` merged into its base, saved as a full model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(adapter_base(adapter))
    merged = PeftModel.from_pretrained(base, fs.localize(adapter)).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(adapter_base(adapter)).save_pretrained(out)


class _Context:
    """What both cards are written from. `weights`: what model/ holds: the student's `full`
    weights, a LoRA `adapter`, or an adapter `merged` into its base."""

    def __init__(self, saved: dict, key: str, r: int, rows: pa.Table, history: list[dict],
                 prompt: list[dict] | None, weights: str = "full"):
        self.weights = weights
        config = saved.get("config", {})
        self.key, self.round, self.rows, self.history, self.prompt = key, r, rows, history, prompt
        self.task = key.split("/", 1)[0]
        self.strategy = (history[-1].get("strategy") if history else None) or \
            config.get("strategy", {}).get("name", "llm2llm")
        # the names the config gave (a built-in name or a hub id), not where they resolved to
        self.models = {role: config.get(role, {}).get("model") or saved.get("models", {}).get(role)
                       for role in ("student", "teacher")}
        self.config_student = config.get("student", {})
        self.student_kind = self.config_student.get("kind", "causal_lm")
        self.train = config.get("train", {})
        self.origins = Counter(rows.column("origin").to_pylist()) if rows.num_rows else Counter()
        self.labels = Counter(rows.column("label").to_pylist()) if rows.num_rows else Counter()
        self.metrics = next((m for m in history if m.get("round") == r), {})
        # the rounds whose teacher rows this training set holds (the exported round's own
        # teacher rows train the next round's student)
        self.before = [m for m in history if m.get("round", r) < r]
        self.version = saved.get("versions", {}).get("llm2llm-engine") or saved.get("git_commit")


def _round_table(history: list[dict]) -> str:
    lines = [("| round | train rows | synthetic | test accuracy | fix rate | break rate | "
              "teacher requests | rows written | accepted |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def cell(m: dict, name: str, digits: int = 3) -> str:
        value = m.get(name)
        return "" if value is None else (f"{value:.{digits}f}" if isinstance(value, float)
                                         else str(value))

    for m in history:
        lines.append("| " + " | ".join(cell(m, n) for n in (
            "round", "n_train", "n_synthetic", "test_accuracy", "fix_rate", "break_rate",
            "n_requests", "n_generated", "n_accepted")) + " |")
    return "\n".join(lines)


def _rejections(history: list[dict]) -> str:
    """Reject counts by gate over `history`: the rounds whose teacher rows this training set
    could hold (every round before the exported one)."""
    totals: Counter = Counter()
    for m in history:
        totals.update(m.get("rejected_by_reason") or {})
    if not totals:
        return "No teacher row was rejected (or the teacher was not asked)."
    return "\n".join(f"- `{reason}`: {n}" for reason, n in totals.most_common())


def _yield(history: list[dict]) -> str:
    asked = sum(m.get("n_generated") or 0 for m in history)
    kept = sum(m.get("n_accepted") or 0 for m in history)
    return f"{kept} of {asked} rows the teacher wrote were accepted" + (
        f" ({kept / asked:.0%})" if asked else "")


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else "?"


def dataset_card(c: _Context) -> str:
    n = c.rows.num_rows
    size = next(name for bound, name in ((1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"),
                                         (1e6, "100K<n<1M"), (float("inf"), "n>1M")) if n < bound)
    front = ("---\n"
             f"pretty_name: {c.key} training set, round {c.round}\n"
             "tags: [llm2llm, synthetic]\n"
             f"size_categories: [{size}]\n"
             "---\n")
    labels = ", ".join(f"{label} {k}" for label, k in c.labels.most_common())
    columns = "\n".join(f"| `{name}` | {COLUMNS.get(name, '')} |"
                        for name in c.rows.column_names)
    return front + f"""
# {c.key}: the training set of round {c.round}

The rows the round-{c.round} student of `{c.key}` trained on, exported by `llm2llm export`
from a run of llm2llm-engine{f" ({c.version})" if c.version else ""}.

- task: `{c.task}`; strategy: `{c.strategy}`
- student: `{c.models.get("student", "?")}` ({c.student_kind}); teacher:
  `{c.models.get("teacher", "?")}`
- rows: {n} ({c.origins.get("seed", 0)} seed, {c.origins.get("synthetic", 0)} synthetic)
- labels: {labels or "none"}
- teacher yield: {_yield(c.before)}

Load it with `datasets.load_from_disk("dataset")`, or read `train.parquet`.

## Rows the gates rejected (rounds before {c.round})

{_rejections(c.before)}

## Rounds

{_round_table(c.history)}

## Columns

| column | meaning |
| --- | --- |
{columns}
"""


def model_card(c: _Context) -> str:
    m = c.metrics
    accuracy = m.get("test_accuracy")
    score = f"{accuracy:.3f} on {m.get('n_test', '?')} test rows" if accuracy is not None \
        else "not measured"
    if m.get("guard_accuracy") is not None:  # why this round (export's default)
        score += (f"; {m['guard_accuracy']:.3f} on the guard rows that choose the round "
                  f"shipped (round {m.get('round', '?')})")
    if c.student_kind == "sequence_classification":
        usage = """```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("model")
model = AutoModelForSequenceClassification.from_pretrained("model").eval()
batch = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
with torch.inference_mode():
    labels = [model.config.id2label[i] for i in model(**batch).logits.argmax(-1).tolist()]
```

It reads the text of the `input` column as it is (no prompt)."""
    else:
        shown = json.dumps(c.prompt, indent=2, ensure_ascii=False) if c.prompt else \
            "(the task's prompt file could not be read where this was exported)"
        load = 'model = AutoModelForCausalLM.from_pretrained("model")' if c.weights != "adapter" \
            else ('# the base model named in model/adapter_config.json, with the adapter over it\n'
                  'from peft import AutoPeftModelForCausalLM\n'
                  'model = AutoPeftModelForCausalLM.from_pretrained("model")')
        usage = f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("model")
{load}
ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
answer = tokenizer.decode(model.generate(ids, max_new_tokens=256)[0, ids.shape[1]:],
                          skip_special_tokens=True)
```

The student was asked in these chat messages (here for the first training row):

```json
{shown}
```"""
    start = "continuing the previous round's student" if "continue" in c.strategy \
        else "from the base model"
    how = {"full": f"all weights, {start}",
           "adapter": f"a LoRA adapter over the frozen base, {start}; this folder holds the "
                      f"adapter (`llm2llm export --merge` writes it merged into the base)",
           "merged": f"a LoRA adapter over the frozen base, {start}; merged into the base "
                     f"here"}[c.weights]
    lora = c.config_student.get("lora") or {}
    if c.weights != "full" and lora:
        how += f"; LoRA rank {lora.get('rank')}, alpha {lora.get('alpha')}, on " \
               f"{', '.join(lora.get('target_modules') or [])}"
    return f"""---
base_model: {c.models.get("student", "?")}
tags: [llm2llm]
---

# {c.key}: the student after round {c.round}

`{c.models.get("student", "?")}` fine-tuned ({how}) on the
{c.rows.num_rows} rows of the training set exported beside this folder, by llm2llm-engine's
`{c.strategy}` strategy with `{c.models.get("teacher", "?")}` as teacher.

- test accuracy: {score}
- training: {_number(c.train.get("epochs"))} epoch(s), learning rate {c.train.get("lr", "?")},
  {c.train.get("batch_size", "?")} rows a step, sequence length
  {c.train.get("max_seq_len", "?")}; {m.get("train", {}).get("steps", "?")} steps

## Use

{usage}
"""
