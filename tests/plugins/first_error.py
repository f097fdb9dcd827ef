"""A strategy from outside engine/strategies/, named in a config's `plugins` (a unit test's
fixture): the first error of each round only."""

from engine.strategies.base import RoundView, Strategy, register


@register
class FirstError(Strategy):
    name = "first_error"
    summary = "the first error only (a plugin fixture)"

    def targets(self, view: RoundView):
        return view.errors.slice(0, 1)
