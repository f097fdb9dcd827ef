"""The leak index: decontamination of candidates against protected rows (test or validation
inputs), by shared word n-gram, equal normalized text, or near copy."""

from __future__ import annotations

import numpy as np

from engine.gates.hashing import in_sorted, ngram_hashes, sorted_unique, text_hashes
from engine.gates.near_dup import NearDuplicateIndex, batches


class NgramLeakIndex:
    """Decontamination: a candidate leaks a protected row (test or validation set) when it
    shares a word n-gram with one (13, as in GPT-3's decontamination), equals one after
    normalization, or is a near-duplicate of one, which covers rows under n words.

    Only rows under 5n words go to the near-duplicate index: a near copy of a longer row
    that shares no n-gram with it needs an edit in every n words, which caps its Jaccard near
    (n-3)/(n+3), 0.625. n-grams are a sorted array of 64-bit hashes: 1M rows in ~150 MB.
    """

    def __init__(self, texts: list[str], n: int = 13, threshold: float = 0.6):
        self.n = n
        self._near = NearDuplicateIndex(threshold)
        exact, ngrams = [np.zeros(0, np.uint64)], [np.zeros(0, np.uint64)]
        start = 0  # a near copy is reported by its protected row's number
        for words, _ in batches(texts):
            exact.append(text_hashes(words))
            ngrams.append(ngram_hashes(words, n, 0)[0])
            short = [i for i, w in enumerate(words) if len(w) < 5 * n]
            self._near.add_words([words[i] for i in short], [str(start + i) for i in short])
            start += len(words)
        self._exact = sorted_unique(np.concatenate(exact))
        self._ngrams = sorted_unique(np.concatenate(ngrams))

    def leak(self, text: str) -> str:
        """"" when `text` is clean, else the reason it leaks a protected row."""
        return self.leak_many([text])[0]

    def leak_many(self, texts: list[str]) -> list[str]:
        out = []
        for words, _ in batches(texts):
            exact = in_sorted(text_hashes(words), self._exact)
            hashes, row = ngram_hashes(words, self.n, 0)
            shares = np.zeros(len(words), bool)
            shares[row[in_sorted(hashes, self._ngrams)]] = True
            near = self._near.find_words(words)
            out += [self._reason(e, s, m)
                    for e, s, m in zip(exact.tolist(), shares.tolist(), near)]
        return out

    def _reason(self, exact: bool, shares_ngram: bool, near_copy_of: str | None) -> str:
        if exact:
            return "in_protected_set: equals a protected row after normalization"
        if shares_ngram:
            return f"ngram_leak: shares a {self.n}-gram with a protected row"
        if near_copy_of is not None:
            return f"in_protected_set: near-duplicate of protected row {near_copy_of}"
        return ""
