"""Quality gates for teacher-written candidates: pure functions and in-memory indexes.

- `degenerate_reason`: "" for a real-looking example, else why not (label_names, repetition,
  prompt_echo, empty).
- `NearDuplicateIndex`: MinHash + LSH banding over word 3-grams; first one wins within a round.
- `NgramLeakIndex`: decontamination against protected rows (shared 13-gram, exact or near copy).

One text model throughout: a text's words are its runs of letters and digits, lowercased
(punctuation and underscores separate words); the normalized text is those words joined by
single spaces. numpy is imported lazily, so `import engine.stages.gates` stays light.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from functools import lru_cache
from itertools import chain, compress
from operator import not_

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
# Chat filler a teacher writes instead of an example; echo words whatever the prompt says.
ECHO_WORDS = frozenset("""sure here certainly okay ok please example examples similar same
generate new label labels text texts question questions following""".split())


def words_of(text: str) -> list[str]:
    return _NON_WORD.sub(" ", text.lower()).split()


def normalize(text: str) -> str:
    return " ".join(words_of(text))


def template_words(*templates: str) -> frozenset[str]:
    """prompt_words for `degenerate_reason`: the words of prompt templates, placeholders cut.

    Pass the templates, not rendered prompts: a rendered prompt holds the seed example, and a
    good paraphrase of it shares most of its words.
    """
    return frozenset(chain.from_iterable(words_of(_PLACEHOLDER.sub(" ", t)) for t in templates))


# ---------------------------------------------------------------- degenerate_reason

def degenerate_reason(text: str, labels: list[str],
                      prompt_words: frozenset[str] | set[str] = frozenset()) -> str:
    """"" when `text` looks like a real example, else "<kind>: <detail>"."""
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
    label"). 3+ content words and 80%: a real question like "What does the student learn?"
    or a GSM8K question reusing the one-shot example's nouns (70%) still passes."""
    content = [w for w in words if w not in STOP_WORDS and not w.isdigit()]
    echoed = sum(w in prompt_words or w in ECHO_WORDS for w in content)
    if len(content) >= 3 and echoed * 5 >= len(content) * 4 and len(words) <= 40:
        return f"prompt_echo: {echoed} of {len(content)} content words come from the prompt"
    return ""


# ---------------------------------------------------------------- hashing helpers

_WORD_HASHES: dict[str, int] = {}
_MUL = 0x9E3779B97F4A7C15  # odd 64-bit multiplier that chains word hashes into a shingle hash
_PAD_LEFT, _PAD_RIGHT = 1, 2  # hashes of the text-boundary tokens (no word hashes to them)


def _word_hashes(words: list[str]):
    """64-bit hash per word (blake2b: the same in every process, unlike hash())."""
    import numpy as np

    cache = _WORD_HASHES
    if len(cache) > 4_000_000:  # a bound on memory; the values never change
        cache.clear()
    new = set(compress(words, map(not_, map(cache.get, words))))
    for w in new:
        cache[w] = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
    return np.fromiter(map(cache.__getitem__, words), np.uint64, len(words))


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
    import numpy as np

    ends = np.cumsum(counts)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts, counts)


def _ngram_hashes(word_lists: list[list[str]], n: int, pad: int):
    """(hashes, row of each): every word n-gram of every text, after `pad` boundary tokens
    on each side. Texts too short for one n-gram give none."""
    import numpy as np

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
_BATCH = 16_384  # rows hashed at once: the (shingles x num_perm) array stays ~150 MB


class _Rows:
    """Per-row features of indexed texts. A stored chunk drops the band keys in row order
    and keeps each band's keys sorted (lookups are binary searches, no per-key dict)."""

    def __init__(self, keys, sig, shingles, offsets, bands=None):
        self.keys, self.sig, self.shingles, self.offsets = keys, sig, shingles, offsets
        self.bands = bands  # (bands, rows)
        self.sorted_bands = self.band_rows = None

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, idx) -> _Rows:
        import numpy as np

        counts = self.offsets[idx + 1] - self.offsets[idx]
        flat = np.repeat(self.offsets[idx], counts) + _ragged_arange(counts)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return _Rows([self.keys[i] for i in idx.tolist()], self.sig[idx], self.shingles[flat],
                     offsets, self.bands[:, idx])

    def stored(self) -> _Rows:
        import numpy as np

        order = np.argsort(self.bands, axis=1, kind="stable")
        self.sorted_bands = np.take_along_axis(self.bands, order, 1)
        self.band_rows, self.bands = order.astype(np.int32), None
        return self

    @staticmethod
    def merged(a: _Rows, b: _Rows) -> _Rows:
        import numpy as np

        rows = _Rows(a.keys + b.keys, np.concatenate([a.sig, b.sig]),
                     np.concatenate([a.shingles, b.shingles]),
                     np.concatenate([a.offsets, b.offsets[1:] + a.offsets[-1]]))
        keys = np.concatenate([a.sorted_bands, b.sorted_bands], axis=1)
        order = np.argsort(keys, axis=1, kind="stable")  # two sorted runs: timsort merges them
        rows.sorted_bands = np.take_along_axis(keys, order, 1)
        rows.band_rows = np.take_along_axis(
            np.concatenate([a.band_rows, b.band_rows + len(a)], axis=1), order, 1)
        return rows


class NearDuplicateIndex:
    """Near-duplicate detection of short texts: MinHash signatures, LSH banding for candidate
    pairs (no all-pairs pass), then the exact Jaccard of the two shingle sets decides.

    Shingles are word 3-grams of the normalized text with two boundary tokens on each side,
    so each word is in exactly 3 shingles wherever it stands: one substituted word in an
    n-word text gives Jaccard (n-1)/(n+5). Hence the default threshold of 0.6: a one-word
    edit is a duplicate from 10 words up (TREC near-copies, "... Japan today?" / "... Japan
    now?" at 0.65), while distinct short questions sharing a prefix ("What is the capital of
    France ?" / "What is the population of France ?": 0.45) stay apart. Without the boundary
    tokens an edit in the last word would count for a third of one in the middle.
    The signature estimate only prunes candidates: with 64 permutations its noise (about
    +-0.06) is as wide as the gap between those two cases, the exact check is not.
    Deterministic across processes: blake2b word hashes and seeded permutations.
    """

    def __init__(self, threshold: float = 0.6, num_perm: int = 64, shingle: int = 3,
                 seed: int = 0):
        import numpy as np

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
        """Index many texts without checking them (e.g. the training set)."""
        self._flush()
        keys = _keys_for(texts, keys)
        for start in range(0, len(texts), _BATCH):
            self._store(self._features(texts[start:start + _BATCH], keys[start:start + _BATCH]))

    def find(self, text: str) -> str | None:
        """Key of an indexed near-duplicate of `text` (the most similar one), else None."""
        return self.find_many([text])[0]

    def find_many(self, texts: list[str]) -> list[str | None]:
        self._flush()
        out: list[str | None] = []
        for start in range(0, len(texts), _BATCH):
            out += self._indexed_matches(self._features(texts[start:start + _BATCH], None))
        return out

    def check_and_add_many(self, texts: list[str],
                           keys: list[str] | None = None) -> list[str | None]:
        """In order: None for a new text (then indexed), else the key it duplicates, from
        the index or from an earlier text of this call (the first one wins)."""
        self._flush()
        keys = _keys_for(texts, keys)
        out: list[str | None] = []
        for start in range(0, len(texts), _BATCH):
            rows = self._features(texts[start:start + _BATCH], keys[start:start + _BATCH])
            dup_of = self._indexed_matches(rows)
            self._resolve_within(rows, dup_of)
            new = [i for i, d in enumerate(dup_of) if d is None]
            if new:
                import numpy as np

                self._store(rows.take(np.asarray(new)))
            out += dup_of
        return out

    # -- internals

    def _flush(self) -> None:
        texts, keys = self._pending
        if texts:
            self._pending = ([], [])
            self.add_many(texts, keys)

    def _store(self, rows: _Rows) -> None:
        # Log-structured: merge equal-ish chunks, so a lookup searches O(log n) chunks.
        self._chunks.append(rows.stored())
        while len(self._chunks) > 1 and len(self._chunks[-2]) <= 2 * len(self._chunks[-1]):
            last = self._chunks.pop()
            self._chunks[-1] = _Rows.merged(self._chunks[-1], last)

    def _features(self, texts: list[str], keys: list[str] | None) -> _Rows:
        import numpy as np

        pad = self.shingle - 1
        word_lists = [words_of(t) or [""] for t in texts]  # "" keeps an empty text hashable
        hashes, row = _ngram_hashes(word_lists, self.shingle, pad)
        # one sorted set of 32-bit shingle hashes per row
        packed = np.sort((row.astype(np.uint64) << 32) | (hashes >> 32))
        packed = packed[np.r_[True, packed[1:] != packed[:-1]]]
        shingles = (packed & 0xFFFFFFFF).astype(np.uint32)
        counts = np.bincount((packed >> 32).astype(np.int64), minlength=len(texts))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        sig = self._signatures(shingles, offsets)
        return _Rows(keys or [""] * len(texts), sig, shingles, offsets, self._band_keys(sig))

    def _signatures(self, shingles, offsets):
        """MinHash: per permutation, the least (a*x + b) >> 32 over the row's shingles."""
        import numpy as np

        h = np.multiply.outer(self._mul, shingles.astype(np.uint64))  # (num_perm, shingles)
        h += self._add[:, None]
        h >>= 32
        return np.ascontiguousarray(np.minimum.reduceat(h, offsets[:-1], axis=1).T, np.uint32)

    def _band_keys(self, sig):
        import numpy as np

        b, r = self.bands, self.rows_per_band
        parts = sig[:, :b * r].T.reshape(b, r, len(sig)).astype(np.uint64)
        acc = parts[:, 0].copy()
        for j in range(1, r):
            acc *= _MUL
            acc += parts[:, j]
        return _mix64(acc)  # (bands, rows)

    def _indexed_matches(self, rows: _Rows) -> list[str | None]:
        """Per row, the key of its most similar indexed near-duplicate, or None."""
        best = [0.0] * len(rows)
        dup_of: list[str | None] = [None] * len(rows)
        for chunk in self._chunks:
            qi, cj = _bucket_peers(rows.bands, chunk)
            qi, cj, jac = self._verified(rows, qi, chunk, cj)
            for i, j, s in zip(qi.tolist(), cj.tolist(), jac.tolist()):
                if s > best[i]:
                    best[i], dup_of[i] = s, chunk.keys[j]
        return dup_of

    def _resolve_within(self, rows: _Rows, dup_of: list[str | None]) -> None:
        """Mark rows that duplicate an earlier kept row of the same batch, in order."""
        import numpy as np

        later, earlier = _within_peers(rows.bands)
        later, earlier, jac = self._verified(rows, later, rows, earlier)
        order = np.lexsort((earlier, -jac, later))  # by row, then most similar first
        for i, j in zip(later[order].tolist(), earlier[order].tolist()):
            if dup_of[i] is None and dup_of[j] is None:
                dup_of[i] = rows.keys[j]

    def _verified(self, a: _Rows, ia, b: _Rows, jb):
        """The candidate pairs whose exact shingle Jaccard reaches the threshold."""
        import numpy as np

        keep = np.zeros(len(ia), bool)
        for s in range(0, len(ia), 1 << 18):  # bounded (pairs x num_perm) temporaries
            sl = slice(s, s + (1 << 18))
            agree = (a.sig[ia[sl]] == b.sig[jb[sl]]).mean(axis=1)
            keep[sl] = agree >= self.threshold - 0.2  # 3+ standard deviations of the estimate
        ia, jb = ia[keep], jb[keep]
        inter, union = _intersections(a, ia, b, jb)
        jac = inter / np.maximum(union, 1)
        ok = inter >= self.threshold * union - 1e-9
        return ia[ok], jb[ok], jac[ok]


def _keys_for(texts: list[str], keys: list[str] | None) -> list[str]:
    if keys is not None and len(keys) != len(texts):
        raise ValueError(f"{len(keys)} keys for {len(texts)} texts")
    return list(texts) if keys is None else [k or t for k, t in zip(keys, texts)]


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
    import numpy as np

    qs, cs = [], []
    for band, keys in enumerate(chunk.sorted_bands):
        q = query_bands[band]
        lo = np.searchsorted(keys, q)
        hit = np.flatnonzero(keys[np.minimum(lo, len(keys) - 1)] == q)
        if not len(hit):
            continue
        lo = lo[hit]
        n = np.minimum(np.searchsorted(keys, q[hit], side="right") - lo, _MAX_PEERS)
        qs.append(np.repeat(hit, n))
        cs.append(chunk.band_rows[band][np.repeat(lo, n) + _ragged_arange(n)])
    return _unique_pairs(qs, cs)


def _within_peers(bands):
    """(later, earlier) row pairs of one batch sharing a band key; each later row meets the
    first _MAX_PEERS rows of its bucket."""
    import numpy as np

    later, earlier = [], []
    for band_keys in bands:
        order = np.argsort(band_keys, kind="stable")
        keys = band_keys[order]
        idx = np.arange(len(keys))
        start = np.maximum.accumulate(np.where(np.r_[True, keys[1:] != keys[:-1]], idx, 0))
        members = np.flatnonzero(idx > start)
        n = np.minimum(members - start[members], _MAX_PEERS)
        later.append(order[np.repeat(members, n)])
        earlier.append(order[np.repeat(start[members], n) + _ragged_arange(n)])
    return _unique_pairs(later, earlier)


def _unique_pairs(firsts: list, seconds: list):
    import numpy as np

    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    packed = np.unique((np.concatenate(firsts).astype(np.int64) << 32)
                       | np.concatenate(seconds).astype(np.int64))
    return packed >> 32, packed & 0xFFFFFFFF


def _intersections(a: _Rows, ia, b: _Rows, jb):
    """(|A & B|, |A | B|) per pair: tag each shingle with its pair, sort, count neighbours."""
    import numpy as np

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
    normalization, or is a near-duplicate of one (which also covers rows under n words).
    n-grams are kept as a sorted array of 64-bit hashes: 1M protected rows fit in ~150 MB.
    """

    def __init__(self, texts: list[str], n: int = 13, threshold: float = 0.6):
        import numpy as np

        self.n = n
        word_lists = [words_of(t) for t in texts]
        self._exact = np.unique(np.fromiter(
            (_text_hash(w) for w in word_lists), np.uint64, len(word_lists)))
        self._ngrams = np.unique(_ngram_hashes(word_lists, n, 0)[0])
        self._near = NearDuplicateIndex(threshold)
        self._near.add_many(list(texts), [str(i) for i in range(len(texts))])

    def leak(self, text: str) -> str:
        """"" when `text` is clean, else the reason it leaks a protected row."""
        return self.leak_many([text])[0]

    def leak_many(self, texts: list[str]) -> list[str]:
        import numpy as np

        word_lists = [words_of(t) for t in texts]
        exact = _in_sorted(np.fromiter((_text_hash(w) for w in word_lists), np.uint64,
                                       len(word_lists)), self._exact)
        hashes, row = _ngram_hashes(word_lists, self.n, 0)
        shares = np.zeros(len(texts), bool)
        shares[row[_in_sorted(hashes, self._ngrams)]] = True
        near = self._near.find_many(list(texts))
        return [("in_protected_set: equals a protected row after normalization" if e else
                 f"ngram_leak: shares a {self.n}-gram with a protected row" if s else
                 f"in_protected_set: near-duplicate of protected row {m}" if m is not None
                 else "") for e, s, m in zip(exact.tolist(), shares.tolist(), near)]


def _text_hash(words: list[str]) -> int:
    digest = hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _in_sorted(values, sorted_array):
    import numpy as np

    if not len(sorted_array):
        return np.zeros(len(values), bool)
    pos = np.minimum(np.searchsorted(sorted_array, values), len(sorted_array) - 1)
    return sorted_array[pos] == values
