"""`random`: as many rows asked about as the targeted run (compare.match), drawn at random from
the rows errors are mined from instead of the errors. Separates "more data" from "data aimed
at errors"."""

from __future__ import annotations

from engine.strategies.base import RoundView, Strategy, register, take_random


@register
class RandomRows(Strategy):
    name = "random"
    summary = "as many rows asked about as llm2llm, drawn at random from the mined rows"
    targets_errors = False  # its own draw: +label_mix and +stratify would do nothing

    def targets(self, view: RoundView):
        n = view.errors.num_rows if view.budget is None else view.budget
        return take_random(view.mining, n, view.rng)
