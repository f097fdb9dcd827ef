"""`random`: the same number of teacher requests as the targeted run, for seed rows drawn at
random instead of the errors. Separates "more data" from "data aimed at errors"."""

from __future__ import annotations

from engine.strategies.base import RoundView, Strategy, register, take_random


@register
class RandomRows(Strategy):
    name = "random"
    summary = "as many requests as llm2llm, for seed rows drawn at random"

    def targets(self, view: RoundView):
        n = view.errors.num_rows if view.budget is None else view.budget
        return take_random(view.mining, n, view.rng)
