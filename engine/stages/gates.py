"""Quality gates for teacher-written candidates: pure functions and in-memory indexes.

- `degenerate_reason`: "" for a real-looking example, else why not (label_names, repetition,
  prompt_echo, empty).
- `NearDuplicateIndex`: MinHash + LSH banding over word 3-grams; first one wins within a round.
- `NgramLeakIndex`: decontamination against protected rows (shared 13-gram, exact or near copy).

One text model throughout: a text's words are its runs of letters and digits, lowercased
(punctuation and underscores separate words); the normalized text is those words joined by
single spaces. Only numpy beyond the standard library, so importing this stays light.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from functools import lru_cache
from itertools import chain, compress
from operator import not_

import numpy as np

_NON_WORD = re.compile(r"[\W_]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")

# Function words carry no sign of an echoed prompt, so prompt_echo ignores them.
STOP_WORDS = frozenset("""
a an the and or but if of to in on at by for with from as into about is are was were be been
being am do does did have has had will would can could should may might must i you he she it
we they me him her us them my your his its our their this that these those what which who whom
whose when where why how not no yes so than then there all any each some one two three four
five six seven eight nine ten first second""".split())
# Chat filler and task talk a teacher writes instead of an example: echo words whatever the
# prompt says, and an echo holds at least one (a real text made of a one-shot example's
# words does not).
ECHO_WORDS = frozenset("""sure here certainly okay ok please example examples similar same
generate new label labels text texts question questions following classify""".split())


# Treebank tokenization splits contractions ("ca n't", "it 's"), as SST-2 and other
# parsed-corpus data sets are written; a teacher writes "can't". Joined and without the
# apostrophe, both are one word, so a near copy of a real row is seen as one.
_SPLIT_CONTRACTION = re.compile(r"(\w) (n't|'(?:s|re|ve|ll|d|m))\b")
_APOSTROPHE = re.compile(r"['’]")


def words_of(text: str) -> list[str]:
    text = _APOSTROPHE.sub("", _SPLIT_CONTRACTION.sub(r"\1\2", text.lower().replace("’", "'")))
    return _NON_WORD.sub(" ", text).split()


def normalize(text: str) -> str:
    return " ".join(words_of(text))


def template_words(*templates: str) -> frozenset[str]:
    """prompt_words for `degenerate_reason`: the words of prompt templates, placeholders cut.

    Pass the instruction templates (teacher system and user prompts), not rendered prompts or
    a one-shot example: those hold a real example, and a good new one shares its words.
    """
    return frozenset(chain.from_iterable(words_of(_PLACEHOLDER.sub(" ", t)) for t in templates))


# ---------------------------------------------------------------- degenerate_reason

def degenerate_reason(text: str, labels: list[str],
                      prompt_words: frozenset[str] | set[str] = frozenset()) -> str:
    """"" when `text` looks like a real example, else "<kind>: <detail>", kind one of
    label_names, repetition, prompt_echo, empty. prompt_words: see `template_words`."""
    words = words_of(text)
    if not words:
        return "empty: no words"
    return (_label_names_reason(words, _label_phrases(tuple(labels)))
            or _repetition_reason(words) or _prompt_echo_reason(words, prompt_words))


@lru_cache(maxsize=64)
def _label_phrases(labels: tuple[str, ...]) -> dict[str, list[tuple[str, ...]]]:
    """First word -> label phrases starting with it, longest first.

    "SearchCreativeWork" matches as "searchcreativework" or "search creative work", but not
    its words one by one: "search for creative work" is a real request, not a label.
    """
    phrases = set()
    for label in labels:
        phrases.add(tuple(words_of(_CAMEL.sub(" ", label))))
        phrases.add(("".join(words_of(label)),))
    by_first: dict[str, list[tuple[str, ...]]] = {}
    for phrase in sorted(p for p in phrases if p and p[0]):
        by_first.setdefault(phrase[0], []).append(phrase)
    for group in by_first.values():
        group.sort(key=len, reverse=True)
    return by_first


def _label_names_reason(words: list[str], phrases: dict[str, list[tuple[str, ...]]]) -> str:
    covered, i = 0, 0
    while i < len(words):
        step = 1
        for phrase in phrases.get(words[i], ()):
            if tuple(words[i:i + len(phrase)]) == phrase:
                covered, step = covered + len(phrase), len(phrase)
                break
        i += step
    if covered * 2 > len(words):
        return f"label_names: {covered} of {len(words)} words are label names"
    return ""


def _repetition_reason(words: list[str]) -> str:
    """Degenerate decoding loops on a phrase. The thresholds pass every real TREC, SST-2,
    GSM8K and QNLI row, and IMDB reviews pasted up to 3 times over (real rows do that)."""
    n = len(words)
    if n < 4 or len(set(words)) == n:
        return ""
    looped = _tandem_repeat_words(words)
    if looped * 2 >= n:
        return f"repetition: {looped} of {n} words repeat a phrase back to back"
    if n >= 8:
        trigrams = list(zip(words, words[1:], words[2:]))
        distinct = len(set(trigrams)) / len(trigrams)
        if distinct < 0.3:
            return f"repetition: only {distinct:.0%} of its word 3-grams are distinct"
        word, count = Counter(words).most_common(1)[0]
        if count * 5 > n * 3:  # "good action, good acting, good pace" is half "good"
            return f"repetition: {word!r} is {count} of {n} words"
    return ""


def _tandem_repeat_words(words: list[str], max_period: int = 16) -> int:
    """Words inside a phrase of 1..max_period words said back to back: 4+ times for 1-2
    word phrases ("bad, bad, bad movie", "on and on and on" are real), 3+ times for longer."""
    covered = bytearray(len(words))
    for period in range(1, min(max_period, len(words) // 3) + 1):
        same = "".join("1" if a == b else "0" for a, b in zip(words, words[period:]))
        # a run of (copies - 1) * period matches at this offset = the phrase copies times
        copies = 4 if period <= 2 else 3
        for run in re.finditer("1{%d,}" % ((copies - 1) * period), same):
            covered[run.start():run.end() + period] = b"\1" * (run.end() - run.start() + period)
    return sum(covered)


def _prompt_echo_reason(words: list[str], prompt_words: frozenset[str] | set[str]) -> str:
    """Mostly the prompt's own words ("Please generate 2 similar examples with the same
    label"): 3+ content words, 80% of them the prompt's, one of them chat or task talk, in
    at most 40 words. Real questions like "What does the student learn?" or a GSM8K question
    reusing the one-shot example's nouns still pass."""
    content = [w for w in words if w not in STOP_WORDS and not w.isdigit()]
    echoed = sum(w in prompt_words or w in ECHO_WORDS for w in content)
    if (len(content) >= 3 and echoed * 5 >= len(content) * 4 and len(words) <= 40
            and not ECHO_WORDS.isdisjoint(content)):
        return f"prompt_echo: {echoed} of {len(content)} content words come from the prompt"
    return ""


# ---------------------------------------------------------------- hashing helpers

_WORD_HASHES: dict[str, int] = {}
_MUL = 0x9E3779B97F4A7C15  # odd 64-bit multiplier that chains token hashes into an n-gram's
_PAD_LEFT, _PAD_RIGHT = 1, 2  # hashes of the text-boundary tokens (no word hashes to them)
_BATCH = 16_384  # texts tokenized at once: bounds the Python objects alive
_CELLS = 1 << 24  # (shingles x permutations) per MinHash step: 128 MiB, long texts included


def _blake64(text: str) -> int:
    """A 64-bit hash that is the same in every process (str's hash() is salted)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _word_hashes(words: list[str]) -> np.ndarray:
    cache = _WORD_HASHES
    if len(cache) > 1_000_000:  # a bound on memory (~150 MB); the values never change
        cache.clear()
    for w in set(compress(words, map(not_, map(cache.get, words)))):
        cache[w] = _blake64(w)
    return np.fromiter(map(cache.__getitem__, words), np.uint64, len(words))


def _text_hashes(word_lists: list[list[str]]) -> np.ndarray:
    return np.fromiter((_blake64(" ".join(w)) for w in word_lists), np.uint64, len(word_lists))


def _mix64(x):
    """splitmix64 finalizer, in place: every input bit moves every output bit."""
    x ^= x >> 30
    x *= 0xBF58476D1CE4E5B9
    x ^= x >> 27
    x *= 0x94D049BB133111EB
    x ^= x >> 31
    return x


def _ragged_arange(counts):
    """[0..c0), [0..c1), ... concatenated."""
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts, counts)


def _sorted_unique(values):
    """np.unique for one flat integer array, without its hash-table pass (2-10x slower)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def _in_sorted(values, sorted_array):
    if not len(sorted_array):
        return np.zeros(len(values), bool)
    return sorted_array[np.minimum(np.searchsorted(sorted_array, values),
                                   len(sorted_array) - 1)] == values


def _ngram_hashes(word_lists: list[list[str]], n: int, pad: int):
    """(hashes, row of each): every word n-gram of every text, after `pad` boundary tokens
    on each side. Texts too short for one n-gram give none."""
    lengths = np.fromiter(map(len, word_lists), np.int64, len(word_lists))
    tokens = _word_hashes(list(chain.from_iterable(word_lists)))
    if pad:
        padded_lengths = lengths + 2 * pad
        starts = np.cumsum(padded_lengths) - padded_lengths
        padded = np.full(padded_lengths.sum(), _PAD_RIGHT, np.uint64)
        padded[np.repeat(starts + pad, lengths) + _ragged_arange(lengths)] = tokens
        for j in range(pad):
            padded[starts + j] = _PAD_LEFT
        tokens, lengths = padded, padded_lengths
    counts = np.maximum(lengths - n + 1, 0)
    first = np.repeat(np.cumsum(lengths) - lengths, counts) + _ragged_arange(counts)
    acc = tokens[first]
    for j in range(1, n):
        acc *= _MUL
        acc += tokens[first + j]
    return _mix64(acc), np.repeat(np.arange(len(word_lists)), counts)


# ---------------------------------------------------------------- NearDuplicateIndex

_MAX_PEERS = 32  # rows compared per shared LSH bucket: bounds the work on templated texts


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
        flat = np.repeat(self.offsets[idx], counts) + _ragged_arange(counts)
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
        if len(self._pending[0]) >= _BATCH:
            self._flush()

    def add_many(self, texts: list[str], keys: list[str] | None = None) -> None:
        """Index texts without checking them (e.g. the training set)."""
        self._flush()
        for words, batch_keys in _batches(texts, keys):
            self._store(self._features(words, batch_keys))

    def find(self, text: str) -> str | None:
        """Key of the most similar indexed near-duplicate of `text`, else None."""
        return self.find_many([text])[0]

    def find_many(self, texts: list[str]) -> list[str | None]:
        self._flush()
        return [key for words, batch_keys in _batches(texts, None)
                for key in self._indexed_matches(self._features(words, batch_keys))]

    def check_and_add_many(self, texts: list[str],
                           keys: list[str] | None = None) -> list[str | None]:
        """In order: None for a new text (then indexed), else the key it duplicates, from
        the index or from an earlier kept text of this call (the first one wins)."""
        self._flush()
        out: list[str | None] = []
        for words, batch_keys in _batches(texts, keys):
            rows = self._features(words, batch_keys)
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
        hashes, row = _ngram_hashes([w or [""] for w in word_lists], self.shingle,
                                    self.shingle - 1)
        packed = _sorted_unique((row.astype(np.uint64) << 32) | (hashes >> 32))  # per-row sets
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
            acc *= _MUL
            acc += parts[:, j]
        return _mix64(acc)  # (bands, rows)

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


def _batches(texts: list[str], keys: list[str] | None):
    """(word lists, keys) per batch; a key defaults to its text."""
    if keys is not None and len(keys) != len(texts):
        raise ValueError(f"{len(keys)} keys for {len(texts)} texts")
    for start in range(0, len(texts), _BATCH):
        batch = texts[start:start + _BATCH]
        batch_keys = batch if keys is None else keys[start:start + _BATCH]
        yield [words_of(t) for t in batch], [k or t for k, t in zip(batch_keys, batch)]


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
    return _unique_pairs(rows, chunk.key_rows[np.repeat(lo, n) + _ragged_arange(n)])


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
                         rows[np.repeat(start[members], n) + _ragged_arange(n)])


def _unique_pairs(firsts, seconds):
    packed = _sorted_unique((firsts.astype(np.int64) << 32) | seconds)
    return packed >> 32, packed & 0xFFFFFFFF


def _intersections(a: _Rows, ia, b: _Rows, jb):
    """(|A & B|, |A | B|) per pair: tag each shingle with its pair, sort, count neighbours."""
    la, lb = a.offsets[ia + 1] - a.offsets[ia], b.offsets[jb + 1] - b.offsets[jb]
    pair = np.arange(len(ia), dtype=np.uint64)
    va = a.shingles[np.repeat(a.offsets[ia], la) + _ragged_arange(la)]
    vb = b.shingles[np.repeat(b.offsets[jb], lb) + _ragged_arange(lb)]
    tagged = np.concatenate([(np.repeat(pair, la) << 32) | va, (np.repeat(pair, lb) << 32) | vb])
    tagged.sort()
    shared = tagged[1:][tagged[1:] == tagged[:-1]] >> 32
    inter = np.bincount(shared.astype(np.int64), minlength=len(ia))
    return inter, la + lb - inter


# ---------------------------------------------------------------- NgramLeakIndex

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
        for start, (words, _) in zip(range(0, len(texts), _BATCH), _batches(texts, None)):
            exact.append(_text_hashes(words))
            ngrams.append(_ngram_hashes(words, n, 0)[0])
            short = [i for i, w in enumerate(words) if len(w) < 5 * n]
            self._near._store(self._near._features([words[i] for i in short],
                                                   [str(start + i) for i in short]))
        self._exact = _sorted_unique(np.concatenate(exact))
        self._ngrams = _sorted_unique(np.concatenate(ngrams))

    def leak(self, text: str) -> str:
        """"" when `text` is clean, else the reason it leaks a protected row."""
        return self.leak_many([text])[0]

    def leak_many(self, texts: list[str]) -> list[str]:
        out = []
        for words, _ in _batches(texts, None):
            exact = _in_sorted(_text_hashes(words), self._exact)
            hashes, row = _ngram_hashes(words, self.n, 0)
            shares = np.zeros(len(words), bool)
            shares[row[_in_sorted(hashes, self._ngrams)]] = True
            near = self._near._indexed_matches(self._near._features(words, [""] * len(words)))
            out += [("in_protected_set: equals a protected row after normalization" if e else
                     f"ngram_leak: shares a {self.n}-gram with a protected row" if s else
                     f"in_protected_set: near-duplicate of protected row {m}" if m is not None
                     else "") for e, s, m in zip(exact.tolist(), shares.tolist(), near)]
        return out
