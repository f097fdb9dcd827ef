"""label_fit: a teacher row whose text reads as another label than the one it carries.

An aimed row takes its target's label whatever the teacher wrote, so a small teacher's
off-label text ("What is the capital of New Zealand?" kept as DESC) trains the student on a
wrong label. The check compares a candidate with the task's real labelled rows in a sentence
embedding space: its k nearest real rows vote, each with its cosine similarity, and the row is
rejected when another label clearly outweighs its own (LabelFit says by how much).

Why votes of the nearest rows and not the student's or the teacher's opinion: an aimed row is
meant to sit where the student goes wrong, so the student's confident disagreement rejects
the very rows the aim is for (measured: half the fitting rows of an SST-2 round); the 135M
teacher labelled real TREC rows at 0.20-0.31. Real rows near the candidate (often its own
target, a real row the student got wrong) speak for a hard row's label instead; its own
target alone, among rows of another label, does not: on hand-judged TREC rows the text of
such a row mostly read as that other label.

The rule itself is numpy only; `encoder_embed` (the bundled MiniLM encoder) imports torch when
first called, so importing this stays light.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Callable

import numpy as np

from engine.config import LabelFitConfig

Embed = Callable[[list[str]], np.ndarray]  # texts -> (n, d) rows of unit length
_RULE = LabelFitConfig()  # the rule's defaults are the config's (teacher.label_fit)


class LabelFit:
    """The real rows' embeddings, and the rule a candidate's label is judged by.

    k: real rows that vote. A row is rejected when another label clearly outweighs its own:
    its own label gets at most max_own_share of the vote, one other label at least
    min_other_share and at least other_over_own times its own. A label with fewer than k real
    rows (TREC's ABBR: 5 of 264) cannot fill the vote whatever the text: its rows are not
    judged (by the first rule, every hand-written "What is SAFER?" read as ENTY).

    The defaults were read off 50 hand-judged accepted TREC rows of one seed and checked on
    54 of another, judged before the rule saw them (RESULTS.md, "label fit"): there they
    rejected 11 of its 23 off-label rows and 5 of its 31 fitting ones; the first rule (own
    label 0%, another 60%) 4 and 2.
    """

    def __init__(self, texts: list[str], labels: list[str], embed: Embed, k: int = _RULE.k,
                 max_own_share: float = _RULE.max_own_share,
                 min_other_share: float = _RULE.min_other_share,
                 other_over_own: float = _RULE.other_over_own):
        self.embed, self.k = embed, k
        self.max_own_share, self.min_other_share = max_own_share, min_other_share
        self.other_over_own = other_over_own
        self.labels = list(labels)
        self.real_rows = Counter(self.labels)
        self.vectors = _unit_rows(embed(list(texts))) if texts else np.zeros((0, 0))

    def reasons(self, texts: list[str], labels: list[str]) -> list[str]:
        """A reject reason per candidate ("" where its label fits, or no real rows are
        known to judge it by)."""
        if not texts or len(self.labels) < self.k:
            return [""] * len(texts)
        shares = self.shares(_unit_rows(self.embed(list(texts))))
        return [self._reason(s, label) for s, label in zip(shares, labels)]

    def shares(self, vectors: np.ndarray) -> list[dict[str, float]]:
        """Per candidate, each label's share of its k nearest real rows' similarity."""
        sims = vectors @ self.vectors.T
        nearest = np.argsort(-sims, axis=1, kind="stable")[:, : self.k]
        out = []
        for row, idx in zip(sims, nearest):
            votes: dict[str, float] = {}
            for j in idx:  # a dissimilar row (cosine <= 0) has no say
                votes[self.labels[j]] = votes.get(self.labels[j], 0.0) + max(float(row[j]), 0.0)
            total = sum(votes.values()) or 1.0
            out.append({label: v / total for label, v in votes.items()})
        return out

    def _reason(self, shares: dict[str, float], label: str) -> str:
        if self.real_rows.get(label, 0) < self.k:
            return ""  # too few real rows of its label to ever hold the vote
        own = shares.get(label, 0.0)
        other, weight = max(((lab, s) for lab, s in shares.items() if lab != label),
                            key=lambda pair: pair[1], default=("", 0.0))
        if (own <= self.max_own_share + 1e-9 and weight >= self.min_other_share
                and weight >= self.other_over_own * own):
            return (f"label_fit: its {self.k} nearest real rows are {other} "
                    f"({weight:.0%} of their weight), not {label} ({own:.0%})")
        return ""


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


_ENCODERS: dict[str, tuple] = {}  # model folder -> (tokenizer, model), loaded once a process
# The driver runs units' augment stages on threads of one process: two first imports of
# transformers' lazy classes at once failed one of them ("cannot import name 'AutoModel'"),
# and two loads would hold the encoder twice.
_LOADING = threading.Lock()


def encoder_embed(model: str, batch_size: int = 32, max_length: int = 128) -> Embed:
    """texts -> mean-pooled, L2-normalised sentence embeddings from an HF encoder folder (the
    bundled `all-minilm-l6-v2`: engine.models.resolve_model), on one CPU thread: a round's
    candidates are a few hundred short texts, and the node's cores are the trainers'."""

    def embed(texts: list[str]) -> np.ndarray:
        import torch

        tokenizer, encoder = _load(model)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                batch = tokenizer(texts[i: i + batch_size], padding=True, truncation=True,
                                  max_length=max_length, return_tensors="pt")
                hidden = encoder(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy())
        return _unit_rows(np.concatenate(out)) if out else np.zeros((0, 0), np.float32)

    return embed


def _load(model: str) -> tuple:
    with _LOADING:
        if model not in _ENCODERS:
            _ENCODERS[model] = _load_encoder(model)
        return _ENCODERS[model]


def _load_encoder(model: str) -> tuple:
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(1)
    return (AutoTokenizer.from_pretrained(model),
            AutoModel.from_pretrained(model, dtype=torch.float32).eval())
