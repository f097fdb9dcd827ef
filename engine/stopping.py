"""Stopping rules and teacher budgets (`stop` in the config), as pure functions of a unit's
round metrics so far: the round loop (engine/driver.py) asks them after every round, and a
resumed run, which recomputes the same metrics, reaches the same decisions.

A budget spent before a round's augment stage skips that stage; the round still trains on
what the last one added, then the unit stops. Requests are held exactly (the last ask is cut
to fit); tokens and cost are known only after an ask, so they are checked between asks.
"""

from __future__ import annotations

from typing import Callable

import pyarrow as pa

from engine.config import Prices, StopConfig
from engine.metrics import generation_usage


def _spent(history: list[dict]) -> tuple[int, int, float]:
    """(teacher requests, teacher tokens, teacher cost) of the rounds so far."""
    requests = sum(m.get("n_requests") or 0 for m in history)
    augment = [m.get("usage", {}).get("augment") or {} for m in history]
    tokens = sum(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0) for u in augment)
    cost = sum(u.get("cost_usd") or 0.0 for u in augment)
    return requests, tokens, cost


def budget_spent(rules: StopConfig, history: list[dict], prices: Prices | None) -> str:
    """"" while the unit may still ask the teacher, else what ran out."""
    requests, tokens, cost = _spent(history)
    if rules.max_requests is not None and requests >= rules.max_requests:
        return f"{requests} of {rules.max_requests} teacher requests (stop.max_requests)"
    if rules.max_tokens is not None and tokens >= rules.max_tokens:
        return f"{tokens} of {rules.max_tokens} teacher tokens (stop.max_tokens)"
    if rules.max_cost_usd is not None and prices is not None and cost >= rules.max_cost_usd:
        return f"${cost:.4f} of ${rules.max_cost_usd} (stop.max_cost_usd)"
    return ""


def request_cap(rules: StopConfig, history: list[dict], prices: Prices | None,
                asked_this_round: int = 0
                ) -> tuple[int | None, Callable[[list[pa.Table]], bool] | None]:
    """(requests this round's asks may still send, a test of whether the tokens or cost of
    this round's answers so far exhaust the budget), for ask_teacher."""
    requests, tokens, cost = _spent(history)
    caps = []
    if rules.max_requests is not None:
        caps.append(rules.max_requests - requests - asked_this_round)
    if rules.max_requests_per_round is not None:
        caps.append(rules.max_requests_per_round - asked_this_round)
    cap = max(0, min(caps)) if caps else None
    if rules.max_tokens is None and (rules.max_cost_usd is None or prices is None):
        return cap, None

    def over(answers: list[pa.Table]) -> bool:
        usage = [generation_usage(a, prices) for a in answers]
        used = tokens + sum(u["prompt_tokens"] + u["completion_tokens"] for u in usage)
        paid = cost + sum(u["cost_usd"] or 0.0 for u in usage)
        return (rules.max_tokens is not None and used >= rules.max_tokens) or (
            rules.max_cost_usd is not None and prices is not None and paid >= rules.max_cost_usd)
    return cap, over


def stop_reason(rules: StopConfig, history: list[dict], from_base: bool = True) -> str:
    """Why a unit stops after the last round in `history`, or "" to go on."""
    last = history[-1]
    if rules.patience is not None:
        # judged on the guard rows where the task holds some (tasks.<i>.n_guard): stopping on
        # test accuracy would choose the student by the rows that are meant to score it
        judge = "guard" if last.get("guard_accuracy") is not None else "test"
        accs = [m[f"{judge}_accuracy"] for m in history
                if m.get(f"{judge}_accuracy") is not None]
        if len(accs) > rules.patience:
            best = max(accs[: -rules.patience])
            if max(accs[-rules.patience:]) <= best:
                return (f"{judge} accuracy has not beaten {best:.3f} for {rules.patience} "
                        f"round(s) (stop.patience)")
    if rules.when_nothing_added and from_base and not last.get("n_accepted"):
        return (f"round {last['round']} added no rows ({last.get('n_errors', 0)} errors mined): "
                f"the next round would repeat it (stop.when_nothing_added)")
    return ""
