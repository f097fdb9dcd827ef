"""`llm2llm` (arXiv 2403.15042): ask the teacher about the seed rows the student got wrong, and
train every round from the base model on seed + accepted rows. The base class's choices are
LLM2LLM's; this module names and registers them."""

from __future__ import annotations

from engine.strategies.base import Strategy, register


@register
class LLM2LLM(Strategy):
    name = "llm2llm"
    summary = "ask about the seed rows the student got wrong (the paper's loop)"
    budget_rank = 0
