"""`mixed`: a share of the rows asked about are errors, the rest random mined rows. Aimed rows
help where the teacher handles the hard cases, breadth where the seed is thin."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from engine.strategies.base import RoundView, Strategy, register, take_random


@register
class Mixed(Strategy):
    name = "mixed"
    summary = "as many rows asked about as llm2llm, targeted_share of them errors, the rest random"
    options = {"share": "targeted_share"}
    targets_errors = False  # its own draw: +label_mix and +stratify would do nothing

    def targets(self, view: RoundView):
        n = view.errors.num_rows if view.budget is None else view.budget
        aimed = take_random(view.errors, round(n * self.settings.targeted_share), view.rng)
        others = view.mining.filter(pc.invert(pc.is_in(
            view.mining["id"], value_set=aimed["id"])))
        rest = take_random(others, n - aimed.num_rows, view.rng)
        return pa.concat_tables([aimed, rest])
