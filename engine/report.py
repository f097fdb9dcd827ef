"""`llm2llm report RUN_DIR`: one self-contained report.html of a run (or a compare).

Per task: test and train accuracy per round (per strategy, mean with the spread over training
seeds, for a compare), fix and break rate, the rows the teacher was asked for, wrote, and which
were accepted or rejected (by reason), tokens and stage times; and a sample of accepted and
rejected rows. Plots are matplotlib figures inlined as SVG: the file needs no network and no
script to view. Read from each unit's metrics.json and augment table, so a partial run reports
what it has.
"""

from __future__ import annotations

import html
import io
import statistics
from collections import defaultdict

from engine.inspect import run_units, unit_metrics
from engine.metrics import chosen_round
from engine.provenance import saved_run
from engine.storage import RunStorage
from engine.strategies import strategy_class

STAGES = ("train", "predict", "augment")
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def collect(run_dir: str) -> dict:
    """task -> strategy -> training seed -> [metrics of round 0, 1, ...] found so far."""
    store = RunStorage(run_dir)
    keys, rounds = run_units(run_dir)
    found: dict = defaultdict(lambda: defaultdict(dict))
    for key in keys:
        for m in unit_metrics(store, key, rounds):
            strategy = m.get("strategy") or "llm2llm"
            found[m["task"]][strategy].setdefault(m.get("train_seed", 0), []).append(m)
    return found


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog: the SVG is inlined in HTML


def _series(by_seed: dict, field: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Rounds, and the mean, min and max over seeds of a metric (rounds where any seed has it)."""
    per_round: dict[int, list[float]] = defaultdict(list)
    for history in by_seed.values():
        for m in history:
            if m.get(field) is not None:
                per_round[m["round"]].append(m[field])
    xs = sorted(per_round)
    return (xs, [statistics.fmean(per_round[x]) for x in xs],
            [min(per_round[x]) for x in xs], [max(per_round[x]) for x in xs])


def trains_once(strategy: str, rounds: int) -> bool:
    """Whether a strategy's one round stands for all (seed_only); a name this engine no
    longer knows (an old run's) is drawn as it was run."""
    try:
        return strategy_class(strategy).rounds(rounds) == 1
    except KeyError:
        return False


def _carry_forward(by_seed: dict, rounds: int) -> dict:
    """seed_only trains once: its round 0 stands for every round, drawn flat."""
    return {s: [dict(h[0], round=r) for r in range(rounds)] for s, h in by_seed.items() if h}


def accuracy_figure(strategies: dict, rounds: int):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, (name, by_seed) in enumerate(strategies.items()):
        if trains_once(name, rounds):
            by_seed = _carry_forward(by_seed, rounds)
        color = COLORS[i % len(COLORS)]
        xs, mean, low, high = _series(by_seed, "test_accuracy")
        n = len(by_seed)
        ax.plot(xs, mean, "o-", color=color, label=f"{name} test" + (f" (mean of {n} seeds)"
                                                                     if n > 1 else ""))
        if n > 1:
            ax.fill_between(xs, low, high, color=color, alpha=0.15)
        xs, mean, *_ = _series(by_seed, "train_accuracy")
        ax.plot(xs, mean, "s--", color=color, alpha=0.6, label=f"{name} train (seed rows)")
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy")
    ax.set_xticks(range(rounds))
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title("Student accuracy per round (band: min to max over seeds)", fontsize=10)
    return fig


def fix_figure(strategies: dict, rounds: int):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for i, (name, by_seed) in enumerate(strategies.items()):
        color = COLORS[i % len(COLORS)]
        for field, style, what in (("fix_rate", "o-", "fixed"), ("break_rate", "x:", "broken"),
                                   ("guard_fix_rate", "s--", "fixed on guard")):
            xs, mean, *_ = _series(by_seed, field)
            if xs:
                ax.plot(xs, mean, style, color=color, label=f"{name} {what}")
    ax.set_xlabel("round")
    ax.set_ylabel("share of rows")
    ax.set_xticks(range(rounds))
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "needs two finished rounds", ha="center", transform=ax.transAxes)
    ax.set_title("Fixed: last round's errors now right (on guard: held-out rows nothing "
                 "was aimed at). Broken: right rows now wrong", fontsize=9)
    return fig


def rows_figure(strategies: dict, rounds: int):
    """Per strategy that asked the teacher: rows asked for, and what became of those written
    (accepted, rejected by reason), summed over seeds, per round."""
    import matplotlib.pyplot as plt

    asking = {n: s for n, s in strategies.items()
              if any(m.get("n_rows_asked") for h in s.values() for m in h)}
    fig, axes = plt.subplots(1, max(1, len(asking)), figsize=(3.4 * max(1, len(asking)), 3.4),
                             sharey=True, squeeze=False)
    reasons = sorted({k for s in asking.values() for h in s.values() for m in h
                      for k in (m.get("rejected_by_reason") or {})})
    for ax, (name, by_seed) in zip(axes[0], asking.items()):
        totals: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for history in by_seed.values():
            for m in history:
                t = totals[m["round"]]
                t["asked"] += m.get("n_rows_asked") or 0
                t["accepted"] += m.get("n_accepted") or 0
                for k, v in (m.get("rejected_by_reason") or {}).items():
                    t[k] += v
        xs = sorted(x for x in totals if totals[x]["asked"])
        bottom = [0] * len(xs)
        for j, part in enumerate(["accepted", *reasons]):
            heights = [totals[x][part] for x in xs]
            ax.bar(xs, heights, bottom=bottom, color="#2ca02c" if part == "accepted"
                   else COLORS[(j + 3) % len(COLORS)], alpha=0.9 if part == "accepted" else 0.6,
                   label=part if ax is axes[0][0] else None)
            bottom = [b + h for b, h in zip(bottom, heights)]
        ax.plot(xs, [totals[x]["asked"] for x in xs], "k_", markersize=30, mew=2,
                label="rows asked for" if ax is axes[0][0] else None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("round")
        ax.set_xticks(range(rounds))
    axes[0][0].set_ylabel("rows written by the teacher")
    if asking:
        fig.legend(fontsize=7, loc="upper center", ncol=4, bbox_to_anchor=(0.5, 1.12))
    else:
        axes[0][0].text(0.5, 0.5, "no round asked the teacher", ha="center",
                        transform=axes[0][0].transAxes)
    return fig


def cost_figure(strategies: dict, rounds: int):
    """Tokens per round (student predictions, teacher) and stage wall times, per strategy,
    summed over seeds."""
    import matplotlib.pyplot as plt

    fig, (tok, sec) = plt.subplots(1, 2, figsize=(9, 3.2))
    width = 0.8 / max(1, len(strategies))
    for i, (name, by_seed) in enumerate(strategies.items()):
        per_round: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for history in by_seed.values():
            for m in history:
                row = per_round[m["round"]]
                for stage, u in (m.get("usage") or {}).items():
                    if u:
                        row[f"{stage} tokens"] += u["prompt_tokens"] + u["completion_tokens"]
                stage_s = m.get("stage_seconds") or {}
                train_s = (m.get("train") or {}).get("wall_seconds")
                for stage in STAGES:
                    row[stage] += (train_s if stage == "train" and train_s else
                                   stage_s.get(stage) or 0)
        xs = sorted(per_round)
        offset = [x - 0.4 + width * (i + 0.5) for x in xs]
        bottom = [0.0] * len(xs)
        for j, part in enumerate(("predict tokens", "augment tokens")):
            heights = [per_round[x][part] for x in xs]
            tok.bar(offset, heights, width, bottom=bottom, color=COLORS[i % len(COLORS)],
                    alpha=0.9 - 0.4 * j, label=f"{name}: {part}")
            bottom = [b + h for b, h in zip(bottom, heights)]
        bottom = [0.0] * len(xs)
        for j, stage in enumerate(STAGES):
            heights = [per_round[x][stage] for x in xs]
            sec.bar(offset, heights, width, bottom=bottom, color=COLORS[i % len(COLORS)],
                    alpha=0.9 - 0.3 * j, label=f"{name}: {stage}")
            bottom = [b + h for b, h in zip(bottom, heights)]
    for ax, label in ((tok, "tokens"), (sec, "seconds")):
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.set_xticks(range(rounds))
        ax.legend(fontsize=6, loc="best")
        ax.grid(alpha=0.3, axis="y")
    tok.set_title("Tokens (prompt + completion)", fontsize=10)
    sec.set_title("Stage wall time (a copied or resumed stage: 0)", fontsize=10)
    return fig


def row_samples(store: RunStorage, keys: list[str], rounds: int, task: str,
                n: int = 8) -> tuple[list[dict], list[dict]]:
    """Up to n accepted and n rejected teacher rows of a task, from its units' augment tables
    in run order."""
    accepted, rejected = [], []
    for key in keys:
        if key != task and not key.startswith(task + "/"):
            continue
        for r in range(rounds):
            stage_dir = store.stage_dir(key, r, "augment")
            if not store.is_complete(stage_dir):
                continue
            for row in store.read_table(stage_dir).to_pylist():
                row["unit"], row["round_"] = key, r
                (accepted if row["accepted"] else rejected).append(row)
            if len(accepted) >= n and len(rejected) >= n:
                return accepted[:n], rejected[:n]
    return accepted[:n], rejected[:n]


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    if not rows:
        return "<p class='none'>none yet</p>"
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(row.get(k, '')))}</td>"
                                    for k, _ in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def composition_rows(strategies: dict) -> list[dict]:
    """Per strategy and round, the training set summed over seeds: rows by origin, the share
    written by the teacher, and each origin's labels (labelled tasks)."""
    out = []
    for name, by_seed in strategies.items():
        rounds = sorted({m["round"] for h in by_seed.values() for m in h})
        for r in rounds:
            found = [m for h in by_seed.values() for m in h if m["round"] == r]
            n_train = sum(m.get("n_train") or 0 for m in found)
            written = sum(m.get("n_synthetic") or 0 for m in found)
            labels: dict[str, dict[str, int]] = {}
            for m in found:
                for origin, counts in (m.get("train_labels") or {}).items():
                    for label, n in counts.items():
                        labels.setdefault(origin, {}).setdefault(label, 0)
                        labels[origin][label] += n
            out.append({
                "strategy": name, "round": r, "rows": n_train, "written": written,
                "share": f"{written / n_train:.2f}" if n_train else "-",
                "labels": "; ".join(f"{o}: " + ", ".join(f"{k} {v}" for k, v in c.items())
                                    for o, c in labels.items()) or "-"})
    return out


def summary_rows(strategies: dict) -> list[dict]:
    """One line per strategy: its last round's test accuracy (mean over seeds), that of the
    round each seed ships (chosen on its guard rows; tasks.<i>.n_guard), and totals."""
    out = []
    for name, by_seed in strategies.items():
        last = [h[-1] for h in by_seed.values() if h]
        acc = [m["test_accuracy"] for m in last if m.get("test_accuracy") is not None]
        chosen = [c for h in by_seed.values() if (c := chosen_round(h))
                  and c.get("test_accuracy") is not None]
        out.append({
            "strategy": name, "seeds": len(by_seed), "round": max(m["round"] for m in last),
            "test_accuracy": f"{statistics.fmean(acc):.3f}" if acc else "-",
            "shipped": (f"{statistics.fmean(c['test_accuracy'] for c in chosen):.3f} (rounds "
                        f"{', '.join(str(c['round']) for c in chosen)})") if chosen else "-",
            "spread": f"{min(acc):.3f} to {max(acc):.3f}" if len(acc) > 1 else "-",
            "synthetic rows": round(statistics.fmean(m["n_synthetic"] for m in last)),
            "teacher requests": sum(m.get("n_requests") or 0 for h in by_seed.values()
                                    for m in h),
            "tokens": sum(m.get("tokens") or 0 for h in by_seed.values() for m in h)})
    return out


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0 1.5em; }
td, th { border: 1px solid #ddd; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } .none { color: #888; } .meta { color: #555; font-size: .9em; }
"""


def render_report(run_dir: str) -> str:
    """The report's HTML."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to SVG only
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, searchable
    saved = saved_run(run_dir)
    keys, rounds = run_units(run_dir)
    found = collect(run_dir)
    store = RunStorage(run_dir)
    config = saved.get("config", {})
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>llm2llm report: "
             f"{html.escape(str(run_dir))}</title><style>{CSS}</style></head><body>",
             f"<h1>llm2llm run report</h1><p class='meta'>{html.escape(str(run_dir))} · "
             f"{rounds} rounds · student {html.escape(str(config.get('student', {}).get('model')))}"
             f" · teacher {html.escape(str(config.get('teacher', {}).get('model')))} · "
             f"commit {html.escape(str(saved.get('git_commit')))}</p>"]
    if not found:
        parts.append("<p class='none'>No round has finished yet.</p>")
    for task, strategies in found.items():
        parts.append(f"<h2>Task {html.escape(task)}</h2>")
        parts.append(_table(summary_rows(strategies), [
            ("strategy", "strategy"), ("seeds", "seeds"), ("round", "last round"),
            ("test_accuracy", "test accuracy"), ("spread", "spread over seeds"),
            ("shipped", "test accuracy of the round shipped (best on guard rows)"),
            ("synthetic rows", "synthetic rows"), ("teacher requests", "teacher requests"),
            ("tokens", "tokens")]))
        parts.append("<p><b>Training sets</b> (per round, summed over seeds: rows trained "
                     "on, rows the teacher wrote and their share, labels by origin)</p>")
        parts.append(_table(composition_rows(strategies), [
            ("strategy", "strategy"), ("round", "round"), ("rows", "rows"),
            ("written", "written by the teacher"), ("share", "share written"),
            ("labels", "labels")]))
        for title, make in (("Accuracy", accuracy_figure), ("Fix rate", fix_figure),
                            ("Teacher rows", rows_figure), ("Tokens and time", cost_figure)):
            fig = make(strategies, rounds)
            parts.append(f"<figure><figcaption><b>{title}</b></figcaption>{_svg(fig)}</figure>")
            plt.close(fig)
        accepted, rejected = row_samples(store, keys, rounds, task)
        cols = [("unit", "unit"), ("round_", "round"), ("seed_id", "asked about"),
                ("label", "label"), ("input", "text the teacher wrote")]
        parts.append("<h3>Accepted rows (a sample)</h3>" + _table(accepted, cols))
        parts.append("<h3>Rejected rows (a sample)</h3>"
                     + _table(rejected, cols + [("reject_reason", "reason")]))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: str, out: str | None = None) -> str:
    """Render and write the report; returns where it went (default <run_dir>/report.html)."""
    store = RunStorage(run_dir)
    text = render_report(run_dir)
    if out is None:
        path = store.path("report.html")
        store.write_text(path, text)
        return store.location(path)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    return out
