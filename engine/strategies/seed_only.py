"""`seed_only`: the student trained on the seed alone, with the same training settings. The
floor every synthesis strategy must beat. `seed_only+with_validation` trains on the seed and
the real validation rows: the fair floor where the others show those rows to the teacher."""

from __future__ import annotations

from engine.strategies.base import RoundView, Strategy, register


@register
class SeedOnly(Strategy):
    name = "seed_only"
    summary = "no teacher: the student trained on the seed alone"
    uses_teacher = False
    takes_switches = False
    own_switches = ("with_validation",)

    def targets(self, view: RoundView):
        return view.errors.slice(0, 0)

    @classmethod
    def rounds(cls, configured: int) -> int:
        return 1  # nothing changes between rounds: round 0 is the result of every round
