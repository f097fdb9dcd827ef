"""AUGMENT: a strategy's plan executed (`augment`, the stage's entry point): teacher requests
per target, then parse -> verify -> gates -> decontaminate -> dedup -> cap, with top-up asks
while a target is short of its quota.

Every candidate the teacher wrote is kept as a row (accepted or not, with the reason), so the
round report can count accept rates and a user can inspect what was thrown away.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from engine.config import LabelFitConfig, TeacherConfig
from engine.gates import (NearDuplicateIndex, NgramLeakIndex, TextStyle, degenerate_reason,
                          self_description_reason, task_talk_words, template_words)
from engine.gates.label_fit import LabelFit, encoder_embed
from engine.records import (CANDIDATE, EXAMPLE, GENERATED, GENERATIONS, RATIONALES, StageResult,
                            request_id, require_columns)
from engine.sampling import to_json
from engine.stages.synthesize import ask_rationales, rationale_requests
from engine.tasks import Parsed, PromptSet, Task

if TYPE_CHECKING:
    from engine.strategies import RoundPlan


def teacher_requests(targets: pa.Table, task: Task, n_per_error: int, round_: int,
                     sampling: dict, constrain_format: bool = False, sample: int = 0,
                     pool: pa.Table | None = None, prompts: PromptSet | None = None) -> pa.Table:
    """One teacher request per target row, asking for `n_per_error` new examples like it.

    sampling: the teacher's parameters for this task (engine/sampling.py), carried by every
    row. With constrain_format, each request carries a `regex` the backend enforces while
    decoding. `seed_id` ties each request to its target; `sample` tells a top-up ask of the
    same request apart (its own answer, its own cache entry). `pool`: the real rows a task
    may draw worked examples from (Task.demonstrations). `prompts`: the plan's prompt set.
    """
    require_columns(targets, [f.name for f in EXAMPLE], "augment")
    rows = targets.to_pylist()
    real = pool.to_pylist() if pool is not None else []
    demos = [task.demonstrations(r, real, n_per_error + 1) for r in rows]
    messages = [json.dumps(task.teacher_messages(r, r["trigger_prediction"], n_per_error, d, prompts))
                for r, d in zip(rows, demos)]
    columns = {
        "request_id": [request_id(r["id"], round_, sample) for r in rows],
        "seed_id": [r["id"] for r in rows],
        "messages": messages,
        "sampling": [to_json(sampling)] * len(rows),
        "sample": pa.array(draws(messages, sample), pa.int32()),
    }
    if constrain_format:
        # no longer than the style gate accepts: twice the longest real text (the part of
        # it the gates judge: a pair's hypothesis where only that is written)
        longest = max((len(task.gate_text(p["input"]).split()) for p in real), default=30)
        columns["regex"] = [task.teacher_format_regex(r, n_per_error, 2 * longest)
                            for r in rows]
    return pa.table(columns)


DRAW_STRIDE = 1000  # sample numbers per draw of a repeated prompt (top-ups stay below it)
# sample numbers per round: a later round asks some of an earlier round's exact prompts (an
# error still wrong, with the same wrong answer; a random row drawn again; s3's control, whose
# prompts are round 0's), and with the same sample the response cache would answer them with
# the earlier round's rows, every one then a near copy of a row already kept (SST-2: 18 of a
# round's 39 targets, 50 of its 153 candidates). The round is not in the cache key; this is.
ROUND_STRIDE = 1_000_000


def draws(messages: list[str], sample: int) -> list[int]:
    """Each request's `sample`: the ask's, and for a prompt repeated in the same ask (zerogen's
    label slots share one) a distinct draw each. The sample is part of the cache key, so the
    repeats are answered separately instead of all from the first one's cached answer."""
    seen: dict[str, int] = {}
    out = []
    for m in messages:
        draw = seen[m] = seen.get(m, -1) + 1
        out.append(sample + draw * DRAW_STRIDE)
    return out


def ask_teacher(targets: pa.Table, generate, build_requests, candidates: "CandidateFilter",
                max_tries: int, max_requests: int | None = None,
                over_budget=None) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Ask about every target; while a target has fewer than its quota of rows accepted, ask
    again (a new `sample`), up to max_tries asks per target. Every ask counts in the budget.

    generate: requests -> GENERATED rows; build_requests(targets, sample) -> requests.
    max_requests: requests all asks may send (an ask is cut to fit); over_budget(answers so
    far) -> True stops before the next ask (engine/stopping.py).
    Returns (all requests, all generated rows, all candidate rows).
    """
    asked, answers, rows = [], [], []
    pending = targets
    for sample in range(max_tries):
        if max_requests is not None:
            pending = pending.slice(0, max(0, max_requests - sum(a.num_rows for a in asked)))
        if pending.num_rows == 0 or candidates.full() or (
                over_budget is not None and answers and over_budget(answers)):
            break
        requests = build_requests(pending, sample)
        generated = generate(requests)
        asked.append(requests)
        answers.append(generated)
        rows += candidates.add(targets, requests, generated)
        short = candidates.short_of_quota()
        pending = targets.filter(pa.array([t in short for t in targets["id"].to_pylist()],
                                          pa.bool_()))
    return (pa.concat_tables(asked, promote_options="default") if asked else pa.table({}),
            pa.concat_tables(answers) if answers else GENERATED.empty_table(),
            pa.Table.from_pylist(rows, schema=CANDIDATE))


class CandidateFilter:
    """parse -> verify -> quality gates -> decontaminate -> near-dedup -> cap, over one round's
    teacher answers as they come (a top-up's answers meet the same index and counts).

    known_inputs: the training set's inputs (a near copy of one is a duplicate);
    protected: test, validation and guard inputs a candidate must not leak;
    style_texts: real texts whose shape a candidate must have (default: known_inputs);
    check: the answer check (AnswerCheck), the one gate that asks the teacher again;
    label_fit: the label-fit gate (engine/gates/label_fit.py), None when off;
    real_texts: the task's real texts the round may read (seed, validation): the words they
    use are the task's own, the description's others talk about it (self_description).
    Lineage (seed row, trigger, sampling) comes from the request that produced each row.
    At most `quota` rows are accepted per target: a teacher that writes more does not get
    more weight in training (the surplus is rejected as over_n_per_error). At most
    `max_rows` in all (a compare matching another unit's rows, compare.match: rows): the
    surplus is rejected as over_budget, and no target is short once they are kept.
    """

    def __init__(self, task: Task, round_: int, teacher_model: str, quota: int,
                 known_inputs: list[str], protected: list[str], near_dup_threshold: float,
                 style_texts: list[str] | None = None, prompt_hash: str | None = None,
                 check: "AnswerCheck | None" = None, label_fit: LabelFit | None = None,
                 max_rows: int | None = None, real_texts: Sequence[str] = ()):
        self.task, self.round, self.teacher_model, self.quota = task, round_, teacher_model, quota
        self.max_rows = max_rows
        self.check, self.label_fit = check, label_fit
        self.prompt_hash = prompt_hash or task.prompts.hash
        self.index = NearDuplicateIndex(near_dup_threshold)
        # the gates judge what the teacher wrote (task.gate_text: QA's question, not the
        # context it was given), against the same part of the rows it is compared with
        gate = task.gate_text
        self.index.add_many([gate(t) for t in known_inputs])
        self.leaks = NgramLeakIndex([gate(t) for t in protected], threshold=near_dup_threshold)
        self.prompt_words = template_words(*task.teacher_templates())
        self.talk_words = task_talk_words(task.description, task.labels, list(real_texts))
        self.style = TextStyle.of([gate(t) for t in (known_inputs if style_texts is None
                                                      else style_texts)])
        self.kept: Counter = Counter()
        self.targets: set[str] = set()

    def full(self) -> bool:
        """Whether max_rows are kept: nothing more is asked."""
        return self.max_rows is not None and self.kept.total() >= self.max_rows

    def short_of_quota(self) -> set[str]:
        if self.full():
            return set()
        return {t for t in self.targets if self.kept[t] < self.quota}

    def add(self, targets: pa.Table, requests: pa.Table, generated: pa.Table) -> list[dict]:
        """CANDIDATE rows for these answers, accepted or rejected with a reason."""
        require_columns(generated, [f.name for f in GENERATED], "augment")
        require_columns(requests, ["request_id", "seed_id", "sampling"], "augment")
        seeds = {r["id"]: r for r in targets.to_pylist()}
        answers = {r["request_id"]: r for r in generated.to_pylist()}
        rows = []
        for req in requests.select(["request_id", "seed_id", "sampling"]).to_pylist():
            seed = seeds[req["seed_id"]]
            self.targets.add(seed["id"])
            for k, cand in enumerate(_parse(self.task, seed, answers.get(req["request_id"]))):
                rows.append(self._row(req, seed, k, cand))
        self._gate(rows)
        return rows

    def _row(self, req: dict, seed: dict, k: int, cand: Parsed) -> dict:
        written = self.task.gate_text(cand.input)
        reason = cand.reject_reason or self.style.reason(written) or (
            degenerate_reason(written, self.task.labels, self.prompt_words)) or (
            self_description_reason(written, self.task.labels, self.talk_words))
        return dict(id=f"{req['request_id']}#{k}", task=self.task.name, input=cand.input,
                    target=cand.target, label=cand.label, origin="synthetic", round=self.round,
                    seed_id=seed["id"], trigger_prediction=seed["trigger_prediction"],
                    teacher_model=self.teacher_model, prompt_hash=self.prompt_hash,
                    sampling=req["sampling"], accepted=not reason, reject_reason=reason)

    def _gate(self, rows: list[dict]) -> None:
        """Leaks, then near-duplicates (of the training set, earlier rows of the round, or
        each other: the first wins), then the label fit and the answer check (if on), then the
        quota; only rows still accepted are checked."""
        live = [r for r in rows if r["accepted"]]
        gate = self.task.gate_text
        for row, leak in zip(live, self.leaks.leak_many([gate(r["input"]) for r in live])):
            if leak:
                row.update(accepted=False, reject_reason=leak)
        live = [r for r in live if r["accepted"]]
        for row, dup in zip(live, self.index.check_and_add_many([gate(r["input"])
                                                                  for r in live])):
            if dup is not None:
                row.update(accepted=False, reject_reason=f"duplicate: near copy of {dup[:80]!r}")
        live = [r for r in live if r["accepted"]]
        if self.label_fit is not None and live:
            for row, reason in zip(live, self.label_fit.reasons(
                    [gate(r["input"]) for r in live], [r["label"] for r in live])):
                if reason:
                    row.update(accepted=False, reject_reason=reason)
            live = [r for r in live if r["accepted"]]
        if self.check is not None and live:
            for row, reason in zip(live, self.check(live)):
                if reason:
                    row.update(accepted=False, reject_reason=reason)
        for row in (r for r in live if r["accepted"]):
            if self.kept[row["seed_id"]] >= self.quota:
                row.update(accepted=False, reject_reason=(
                    f"over_n_per_error: {self.quota} already kept for this seed row"))
            elif self.full():
                row.update(accepted=False, reject_reason=(
                    f"over_budget: {self.max_rows} rows kept, as many as the matched unit's"))
            else:
                self.kept[row["seed_id"]] += 1


class AnswerCheck:
    """Self-consistency for rows whose answer can be checked (math): the teacher answers each
    candidate's question again, greedily, as the student is asked it, and a row whose own
    answer it does not reproduce is rejected ("unconfirmed"). A wrong answer under a
    plausible question passes every other gate, and teaches the student wrong arithmetic on
    the very shape of problem it is tested on. The answer is read as the candidates are
    (Task.recomputed: math's calculator), so the check asks whether the teacher takes the
    same steps, not whether it adds well.

    generate: requests -> GENERATED rows. The checks' requests and answers are kept
    (`requests`, `generated`) for the stage's token accounting.
    """

    def __init__(self, task: Task, generate, sampling: dict):
        self.task, self.generate = task, generate
        self.sampling = to_json({**sampling, "temperature": 0.0, "top_p": 1.0})
        self.requests: list[pa.Table] = []
        self.generated: list[pa.Table] = []

    def __call__(self, rows: list[dict]) -> list[str]:
        """A reject reason per row ("" for a confirmed one)."""
        requests = pa.table({
            "request_id": [f"{r['id']}?check" for r in rows],
            "seed_id": [r["seed_id"] for r in rows],
            "messages": [json.dumps(self.task.student_messages(r["input"])) for r in rows],
            "sampling": [self.sampling] * len(rows),
            "sample": pa.array([0] * len(rows), pa.int32())})
        generated = self.generate(requests)
        self.requests.append(requests)
        self.generated.append(generated)
        answers = {g["request_id"]: g for g in generated.to_pylist()}
        reasons = []
        for row in rows:
            answer = answers.get(f"{row['id']}?check")
            if answer is None or answer["error"]:
                reasons.append("unconfirmed: the check got no answer")
                continue
            output = self.task.recomputed(row["input"], answer["output"] or "")
            got, right = self.task.grade(output, row["label"])
            reasons.append("" if right else (
                f"unconfirmed: solved again, the teacher answers {got or 'nothing'!r}, "
                f"not {row['label']!r}"))
        return reasons


def _parse(task: Task, seed: dict, gen: dict | None) -> list[Parsed]:
    if gen is None or gen["error"]:
        reason = "teacher_error: " + ("missing output" if gen is None else gen["error"])
        return [Parsed(reject_reason=reason)]
    return task.parse_teacher(gen["output"] or "", seed)


def accepted_examples(candidates: pa.Table) -> pa.Table:
    """The accepted candidates as training examples (EXAMPLE schema)."""
    accepted = candidates.filter(pc.field("accepted"))
    return accepted.select([f.name for f in EXAMPLE]).cast(EXAMPLE)


@dataclass(frozen=True)
class TeacherCalls:
    """How the augment stage reaches the teacher for one unit: `ask` for new rows, `check`
    for the answer check (its own step in the logs), both requests -> GENERATED rows. `draw`:
    the unit's training seed, carried by its asks (not its greedy checks), so each training
    seed of a compare gets its own teacher answers and the spread over seeds includes the
    teacher's; None: the job seed's draw."""

    ask: Callable[[pa.Table], pa.Table]
    check: Callable[[pa.Table], pa.Table]
    draw: int | None = None

    def drawn(self, requests: pa.Table) -> pa.Table:
        """The requests with this unit's draw (part of their cache key)."""
        if self.draw is None:
            return requests
        return requests.append_column("draw", pa.array([self.draw] * requests.num_rows,
                                                       pa.int64()))


def label_fit_gate(task: Task, label_rows: pa.Table | None, settings: LabelFitConfig,
                   embed=None) -> LabelFit | None:
    """The label-fit gate for a round, or None where it cannot judge: not a task whose labels
    name what a text is, or fewer real labelled rows than vote. embed: texts -> unit vectors
    (default: settings.model's mean-pooled encoder)."""
    if not task.labels_name_text or label_rows is None or label_rows.num_rows < settings.k:
        return None
    if embed is None:
        from engine.models import resolve_model

        embed = encoder_embed(resolve_model(settings.model))
    gate = task.gate_text
    return LabelFit([gate(t) for t in label_rows.column("input").to_pylist()],
                    label_rows.column("label").to_pylist(), embed, k=settings.k,
                    max_own_share=settings.max_own_share,
                    min_other_share=settings.min_other_share,
                    other_over_own=settings.other_over_own)


def repeated(targets: pa.Table, n: int) -> pa.Table:
    """Each target n times, the k-th copy's id suffixed `#k` (k >= 1): the copies are asked
    separately, each with its own quota and draw (their prompts are the same, so `draws`
    gives each its own sample), and a row's seed_id still names the row it was written on."""
    if n <= 1 or targets.num_rows == 0:
        return targets
    copies = [targets]
    for k in range(1, n):
        ids = pa.array([f"{i}#{k}" for i in targets.column("id").to_pylist()])
        copy = targets.set_column(targets.schema.get_field_index("id"), "id", ids)
        copies.append(copy.set_column(copy.schema.get_field_index("seed_id"), "seed_id", ids))
    return pa.concat_tables(copies)


def augment(plan: "RoundPlan", task: Task, r: int, teacher: TeacherConfig, sampling: dict,
            calls: TeacherCalls, train_set: pa.Table, protected: list[str],
            request_cap: Callable[[int], tuple[int | None, Callable | None]],
            label_fit: bool = False, embed=None,
            match: tuple[str, int] | None = None) -> StageResult:
    """Execute a strategy's plan: (rationales first, where it says so, as targets) every
    target asked about until its quota is accepted or its tries run out, through the gates.

    protected: test, validation and guard inputs no candidate may leak; request_cap(requests sent
    already) -> (requests the asks may send, over_budget) from the unit's stop rules.
    label_fit: the label-fit gate is on (teacher.label_fit, or the strategy's +label_fit);
    embed: its sentence encoder (tests pass a fake one); match: (what, how many) of another
    unit's round this one matches (compare.match): "requests" caps the requests sent
    (rationale asks included), "rows" the rows accepted; "targets" is the plan's."""
    beside, asked_before, info = {}, 0, {}
    if plan.first_texts:  # the teacher writes second texts on real first ones
        task = task.writing_second(plan.first_texts, draw=f"r{r}:d{calls.draw}")
    targets = plan.targets
    # a prompt asked in an earlier round gets new samples, so new answers (ROUND_STRIDE)
    fresh = r * ROUND_STRIDE
    if plan.rationales_per_label:
        targets, rationale_asks, answers = ask_rationales(
            task, plan.rationales_per_label, r, calls.ask,
            lambda labels, sample: calls.drawn(rationale_requests(
                task, labels, plan.rationales_per_label, r, sampling, teacher.constrained,
                sample + fresh)),
            teacher.max_tries)
        beside[RATIONALES] = targets
        asked_before = rationale_asks.num_rows
        info["rationales"] = targets.num_rows
        targets = repeated(targets, plan.repeats)
    checks = teacher.check_answers if teacher.check_answers is not None \
        else task.checkable_answers
    check = AnswerCheck(task, calls.check, sampling) if checks else None
    gates = CandidateFilter(task, r, teacher.model, plan.quota,
                            train_set.column("input").to_pylist(), protected,
                            teacher.near_dup_threshold, style_texts=plan.style_texts,
                            prompt_hash=plan.prompts.hash, check=check,
                            label_fit=label_fit_gate(task, plan.label_rows, teacher.label_fit,
                                                     embed) if label_fit else None,
                            max_rows=match[1] if match and match[0] == "rows" else None,
                            real_texts=plan.real_texts)
    cap, over = request_cap(asked_before)
    if match and match[0] == "requests":
        left = max(0, match[1] - asked_before)
        cap = left if cap is None else min(cap, left)
    requests, generated, candidates = ask_teacher(
        targets, calls.ask,
        lambda rows, sample: calls.drawn(teacher_requests(
            rows, task, plan.quota, r, sampling, teacher.constrained, sample + fresh,
            plan.demo_pool, plan.prompts)),
        gates, teacher.max_tries, max_requests=cap, over_budget=over)
    earlier = [answers] if plan.rationales_per_label and answers is not None else []
    beside[GENERATIONS] = pa.concat_tables([*earlier, generated,
                                            *(check.generated if check else [])])
    asked = {"targets": len(set(requests.column("seed_id").to_pylist()))
             if requests.num_rows else 0, "quota": plan.quota,
             "requests": requests.num_rows + asked_before,
             "check_requests": sum(t.num_rows for t in check.requests) if check else 0}
    if match:
        info["matched"] = {"by": match[0], "budget": match[1]}
    return StageResult(candidates, {**asked, **info}, beside)
