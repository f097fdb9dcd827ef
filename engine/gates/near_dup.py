"""The near-duplicate index: MinHash signatures and LSH banding over word 3-grams, the exact
Jaccard of two shingle sets deciding; first one wins within a round."""

from __future__ import annotations

import numpy as np

from engine.gates.hashing import MUL, mix64, ngram_hashes, ragged_arange, sorted_unique
from engine.gates.words import words_of

BATCH = 16_384  # texts tokenized at once: bounds the Python objects alive
_CELLS = 1 << 24  # (shingles x permutations) per MinHash step: 128 MiB, long texts included
_MAX_PEERS = 32  # rows compared per shared LSH bucket: bounds the work on templated texts


def batches(texts: list[str], keys: list[str] | None = None):
    """(word lists, keys) per batch of up to BATCH texts; a key defaults to its text."""
    if keys is not None and len(keys) != len(texts):
        raise ValueError(f"{len(keys)} keys for {len(texts)} texts")
    for start in range(0, len(texts), BATCH):
        batch = texts[start:start + BATCH]
        batch_keys = batch if keys is None else keys[start:start + BATCH]
        yield [words_of(t) for t in batch], [k or t for k, t in zip(batch_keys, batch)]


class _Rows:
    """Features of indexed texts. Stored, it trades the band keys in row order for one sorted
    array of all bands' keys (lookups are binary searches, no per-key dict)."""

    def __init__(self, keys, sig, shingles, offsets, bands=None):
        self.keys, self.sig, self.shingles, self.offsets = keys, sig, shingles, offsets
        self.bands = bands  # (bands, rows); each band's keys salted apart from the others'
        self.sorted_keys = self.key_rows = None

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, idx) -> _Rows:
        counts = self.offsets[idx + 1] - self.offsets[idx]
        flat = np.repeat(self.offsets[idx], counts) + ragged_arange(counts)
        return _Rows([self.keys[i] for i in idx.tolist()], self.sig[idx], self.shingles[flat],
                     np.concatenate([[0], np.cumsum(counts)]), self.bands[:, idx])

    def stored(self) -> _Rows:
        order = np.argsort(self.bands.ravel(), kind="stable")
        self.sorted_keys = self.bands.ravel()[order]
        self.key_rows, self.bands = (order % len(self)).astype(np.int32), None
        return self

    @staticmethod
    def merged(a: _Rows, b: _Rows) -> _Rows:
        rows = _Rows(a.keys + b.keys, np.concatenate([a.sig, b.sig]),
                     np.concatenate([a.shingles, b.shingles]),
                     np.concatenate([a.offsets, b.offsets[1:] + a.offsets[-1]]))
        keys = np.concatenate([a.sorted_keys, b.sorted_keys])
        order = np.argsort(keys, kind="stable")  # two sorted runs: timsort merges them
        rows.sorted_keys = keys[order]
        rows.key_rows = np.concatenate([a.key_rows, b.key_rows + len(a)])[order]
        return rows


class NearDuplicateIndex:
    """Near-duplicate detection of short texts: MinHash signatures, LSH banding for candidate
    pairs (no all-pairs pass), then the exact Jaccard of the two shingle sets decides.

    Shingles are word 3-grams of the normalized text with two boundary tokens on each side,
    so each word is in exactly 3 shingles wherever it stands: one substituted word in an
    n-word text gives Jaccard (n-1)/(n+5). Hence the default threshold of 0.6: a one-word
    edit is a duplicate from 10 words up ("... Japan today?" / "... Japan now?": 0.65), while
    distinct short questions sharing a prefix ("What is the capital of France ?" / "What is
    the population of France ?": 0.45) stay apart. Without the boundary tokens an edit in the
    last word would weigh a third of one in the middle (and texts under 3 words still get
    shingles that only an equal text shares in full).
    The signature estimate only prunes candidates: with 64 permutations its noise (+-0.06)
    is as wide as the gap between those two cases; the exact check has none. Bands are
    chosen so a pair at the threshold is a candidate with probability >= 0.95 (21 bands of 3
    rows at 0.6: 0.994); a row meets at most the first 32 rows of any one bucket.
    Deterministic across processes: blake2b word hashes and seeded permutations.
    """

    def __init__(self, threshold: float = 0.6, num_perm: int = 64, shingle: int = 3,
                 seed: int = 0):
        self.threshold, self.num_perm, self.shingle = threshold, num_perm, shingle
        self.bands, self.rows_per_band = _choose_bands(threshold, num_perm)
        rng = np.random.default_rng(seed)
        self._mul = rng.integers(0, 2**63, num_perm, dtype=np.uint64) * 2 + 1  # odd
        self._add = rng.integers(0, 2**63, num_perm, dtype=np.uint64)
        self._chunks: list[_Rows] = []
        self._pending: tuple[list[str], list[str]] = ([], [])

    def __len__(self) -> int:
        return sum(map(len, self._chunks)) + len(self._pending[0])

    def add(self, text: str, key: str = "") -> None:
        """Index one text; `find` answers with `key` (the text itself when key is "")."""
        self._pending[0].append(text)
        self._pending[1].append(key or text)
        if len(self._pending[0]) >= BATCH:
            self._flush()

    def add_many(self, texts: list[str], keys: list[str] | None = None) -> None:
        """Index texts without checking them (e.g. the training set)."""
        self._flush()
        for word_lists, batch_keys in batches(texts, keys):
            self.add_words(word_lists, batch_keys)

    def add_words(self, word_lists: list[list[str]], keys: list[str]) -> None:
        """`add_many` for one batch of texts already split by `words_of`, keyed by `keys`:
        for a caller that has the words for its own use too (the leak index)."""
        self._flush()
        self._store(self._features(word_lists, keys))

    def find(self, text: str) -> str | None:
        """Key of the most similar indexed near-duplicate of `text`, else None."""
        return self.find_many([text])[0]

    def find_many(self, texts: list[str]) -> list[str | None]:
        self._flush()
        return [key for word_lists, _ in batches(texts) for key in self.find_words(word_lists)]

    def find_words(self, word_lists: list[list[str]]) -> list[str | None]:
        """`find_many` for one batch of texts already split by `words_of`."""
        self._flush()
        return self._indexed_matches(self._features(word_lists, [""] * len(word_lists)))

    def check_and_add_many(self, texts: list[str],
                           keys: list[str] | None = None) -> list[str | None]:
        """In order: None for a new text (then indexed), else the key it duplicates, from
        the index or from an earlier kept text of this call (the first one wins)."""
        self._flush()
        out: list[str | None] = []
        for word_lists, batch_keys in batches(texts, keys):
            rows = self._features(word_lists, batch_keys)
            dup_of = self._indexed_matches(rows)
            self._resolve_within(rows, dup_of)
            new = np.flatnonzero(np.array([d is None for d in dup_of], bool))
            if len(new):
                self._store(rows.take(new))
            out += dup_of
        return out

    def _flush(self) -> None:
        texts, keys = self._pending
        if texts:
            self._pending = ([], [])
            self.add_many(texts, keys)

    def _store(self, rows: _Rows) -> None:
        # Log-structured: merge equal-ish chunks, so a lookup searches O(log n) of them.
        if not len(rows):
            return
        self._chunks.append(rows.stored())
        while len(self._chunks) > 1 and len(self._chunks[-2]) <= 2 * len(self._chunks[-1]):
            last = self._chunks.pop()
            self._chunks[-1] = _Rows.merged(self._chunks[-1], last)

    def _features(self, word_lists: list[list[str]], keys: list[str]) -> _Rows:
        # "" keeps an empty text hashable (and equal to other empty texts)
        hashes, row = ngram_hashes([w or [""] for w in word_lists], self.shingle,
                                   self.shingle - 1)
        packed = sorted_unique((row.astype(np.uint64) << 32) | (hashes >> 32))  # per-row sets
        shingles = (packed & 0xFFFFFFFF).astype(np.uint32)
        counts = np.bincount((packed >> 32).astype(np.int64), minlength=len(word_lists))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        sig = self._signatures(shingles, offsets)
        return _Rows(keys, sig, shingles, offsets, self._band_keys(sig))

    def _signatures(self, shingles, offsets):
        """MinHash: per permutation, the least (a*x + b) >> 32 over the row's shingles."""
        n = len(offsets) - 1
        sig = np.empty((n, self.num_perm), np.uint32)
        start, per_step = 0, max(_CELLS // self.num_perm, 1)
        while start < n:
            end = int(np.searchsorted(offsets, offsets[start] + per_step, "right")) - 1
            end = min(max(end, start + 1), n)
            lo, hi = offsets[start], offsets[end]
            h = np.multiply.outer(self._mul, shingles[lo:hi].astype(np.uint64))
            h += self._add[:, None]
            h >>= 32
            sig[start:end] = np.minimum.reduceat(h, offsets[start:end] - lo, axis=1).T
            start = end
        return sig

    def _band_keys(self, sig):
        b, r = self.bands, self.rows_per_band
        parts = sig[:, :b * r].T.reshape(b, r, len(sig)).astype(np.uint64)
        acc = parts[:, 0] | (np.arange(b, dtype=np.uint64)[:, None] << 40)  # band as salt
        for j in range(1, r):
            acc *= MUL
            acc += parts[:, j]
        return mix64(acc)  # (bands, rows)

    def _indexed_matches(self, rows: _Rows) -> list[str | None]:
        """Per row, the key of its most similar indexed near-duplicate, or None."""
        best = [0.0] * len(rows)
        dup_of: list[str | None] = [None] * len(rows)
        for chunk in self._chunks:
            qi, cj, jac = self._verified(rows, *_bucket_peers(rows.bands, chunk), chunk)
            for i, j, s in zip(qi.tolist(), cj.tolist(), jac.tolist()):
                if s > best[i]:
                    best[i], dup_of[i] = s, chunk.keys[j]
        return dup_of

    def _resolve_within(self, rows: _Rows, dup_of: list[str | None]) -> None:
        """Mark rows that duplicate an earlier kept row of the same batch, in order."""
        later, earlier, jac = self._verified(rows, *_within_peers(rows.bands), rows)
        order = np.lexsort((earlier, -jac, later))  # by row, then most similar first
        for i, j in zip(later[order].tolist(), earlier[order].tolist()):
            if dup_of[i] is None and dup_of[j] is None:  # j < i: already decided
                dup_of[i] = rows.keys[j]

    def _verified(self, a: _Rows, ia, jb, b: _Rows):
        """(ia, jb, Jaccard) of the candidate pairs whose exact Jaccard reaches threshold."""
        keep = np.zeros(len(ia), bool)
        for s in range(0, len(ia), 1 << 18):  # bounded (pairs x num_perm) temporaries
            agree = (a.sig[ia[s:s + (1 << 18)]] == b.sig[jb[s:s + (1 << 18)]]).mean(axis=1)
            keep[s:s + (1 << 18)] = agree >= self.threshold - 0.2  # 3+ sd of the estimate
        ia, jb = ia[keep], jb[keep]
        inter, union = _intersections(a, ia, b, jb)
        ok = inter >= self.threshold * union - 1e-9
        return ia[ok], jb[ok], (inter / np.maximum(union, 1))[ok]


def _choose_bands(threshold: float, num_perm: int, recall: float = 0.95) -> tuple[int, int]:
    """(bands, rows per band): the longest bands (fewest spurious candidates) that still
    make a pair at exactly `threshold` a candidate with probability >= `recall`."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold ** rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


def _bucket_peers(query_bands, chunk: _Rows):
    """(query row, chunk row) pairs sharing a band key; up to _MAX_PEERS per bucket."""
    order = np.argsort(query_bands.ravel())  # sorted queries: each search starts near the last
    keys, q = chunk.sorted_keys, query_bands.ravel()[order]
    lo = np.searchsorted(keys, q)
    hit = np.flatnonzero(keys[np.minimum(lo, len(keys) - 1)] == q)
    lo = lo[hit]
    n = np.minimum(np.searchsorted(keys, q[hit], side="right") - lo, _MAX_PEERS)
    rows = np.repeat(order[hit] % query_bands.shape[1], n)
    return _unique_pairs(rows, chunk.key_rows[np.repeat(lo, n) + ragged_arange(n)])


def _within_peers(bands):
    """(later, earlier) row pairs of one batch sharing a band key; a later row meets the
    first _MAX_PEERS rows of its bucket."""
    order = np.argsort(bands.ravel(), kind="stable")  # a bucket's rows stay in row order
    keys, rows = bands.ravel()[order], order % bands.shape[1]
    idx = np.arange(len(keys))
    start = np.maximum.accumulate(np.where(np.r_[True, keys[1:] != keys[:-1]], idx, 0))
    members = np.flatnonzero(idx > start)
    n = np.minimum(members - start[members], _MAX_PEERS)
    return _unique_pairs(rows[np.repeat(members, n)],
                         rows[np.repeat(start[members], n) + ragged_arange(n)])


def _unique_pairs(firsts, seconds):
    packed = sorted_unique((firsts.astype(np.int64) << 32) | seconds)
    return packed >> 32, packed & 0xFFFFFFFF


def _intersections(a: _Rows, ia, b: _Rows, jb):
    """(|A & B|, |A | B|) per pair: tag each shingle with its pair, sort, count neighbours."""
    la, lb = a.offsets[ia + 1] - a.offsets[ia], b.offsets[jb + 1] - b.offsets[jb]
    pair = np.arange(len(ia), dtype=np.uint64)
    va = a.shingles[np.repeat(a.offsets[ia], la) + ragged_arange(la)]
    vb = b.shingles[np.repeat(b.offsets[jb], lb) + ragged_arange(lb)]
    tagged = np.concatenate([(np.repeat(pair, la) << 32) | va, (np.repeat(pair, lb) << 32) | vb])
    tagged.sort()
    shared = tagged[1:][tagged[1:] == tagged[:-1]] >> 32
    inter = np.bincount(shared.astype(np.int64), minlength=len(ia))
    return inter, la + lb - inter
