"""`random`: the same number of teacher requests as the targeted run, for seed rows drawn at
random instead of the errors. Separates "more data" from "data aimed at errors"."""

from __future__ import annotations

from engine.strategies import RoundView, Strategy, take_random


class RandomRows(Strategy):
    name = "random"

    def targets(self, view: RoundView):
        n = view.errors.num_rows if view.budget is None else view.budget
        return take_random(view.mining, n, view.rng)
