"""Hashing kernels of the indexes: 64-bit word and n-gram hashes over many texts at once, and
the sorted-array set operations the indexes look them up with.

Hashes are blake2b-based, so they are the same in every process (str's hash() is salted) and
an index built in one worker answers like one built in another. Only numpy.
"""

from __future__ import annotations

import hashlib
from itertools import chain, compress
from operator import not_

import numpy as np

MUL = 0x9E3779B97F4A7C15  # odd 64-bit multiplier that chains token hashes into an n-gram's
PAD_LEFT, PAD_RIGHT = 1, 2  # hashes of the text-boundary tokens (no word hashes to them)
_WORD_HASHES: dict[str, int] = {}


def blake64(text: str) -> int:
    """A 64-bit hash that is the same in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def word_hashes(words: list[str]) -> np.ndarray:
    cache = _WORD_HASHES
    if len(cache) > 1_000_000:  # a bound on memory (~150 MB); the values never change
        cache.clear()
    for w in set(compress(words, map(not_, map(cache.get, words)))):
        cache[w] = blake64(w)
    return np.fromiter(map(cache.__getitem__, words), np.uint64, len(words))


def text_hashes(word_lists: list[list[str]]) -> np.ndarray:
    """One hash per text of its normalized form: equal after normalization, equal hash."""
    return np.fromiter((blake64(" ".join(w)) for w in word_lists), np.uint64, len(word_lists))


def mix64(x):
    """splitmix64 finalizer, in place: every input bit moves every output bit."""
    x ^= x >> 30
    x *= 0xBF58476D1CE4E5B9
    x ^= x >> 27
    x *= 0x94D049BB133111EB
    x ^= x >> 31
    return x


def ragged_arange(counts):
    """[0..c0), [0..c1), ... concatenated."""
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts, counts)


def sorted_unique(values):
    """np.unique for one flat integer array, without its hash-table pass (2-10x slower)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def in_sorted(values, sorted_array):
    """Per value, whether it is in `sorted_array` (binary search, no set of Python ints)."""
    if not len(sorted_array):
        return np.zeros(len(values), bool)
    return sorted_array[np.minimum(np.searchsorted(sorted_array, values),
                                   len(sorted_array) - 1)] == values


def ngram_hashes(word_lists: list[list[str]], n: int, pad: int):
    """(hashes, row of each): every word n-gram of every text, after `pad` boundary tokens
    on each side. Texts too short for one n-gram give none."""
    lengths = np.fromiter(map(len, word_lists), np.int64, len(word_lists))
    tokens = word_hashes(list(chain.from_iterable(word_lists)))
    if pad:
        tokens, lengths = _padded(tokens, lengths, pad)
    counts = np.maximum(lengths - n + 1, 0)
    first = np.repeat(np.cumsum(lengths) - lengths, counts) + ragged_arange(counts)
    acc = tokens[first]
    for j in range(1, n):
        acc *= MUL
        acc += tokens[first + j]
    return mix64(acc), np.repeat(np.arange(len(word_lists)), counts)


def _padded(tokens, lengths, pad: int):
    """(tokens, lengths) with `pad` boundary tokens before and after each text's run."""
    padded_lengths = lengths + 2 * pad
    starts = np.cumsum(padded_lengths) - padded_lengths
    padded = np.full(padded_lengths.sum(), PAD_RIGHT, np.uint64)
    padded[np.repeat(starts + pad, lengths) + ragged_arange(lengths)] = tokens
    for j in range(pad):
        padded[starts + j] = PAD_LEFT
    return padded, padded_lengths
