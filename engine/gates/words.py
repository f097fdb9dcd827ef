"""The one text model every gate shares: a text's words are its runs of letters and digits,
lowercased (punctuation and underscores separate words); the normalized text is those words
joined by single spaces. Rules, near-duplicates and leaks all see a text through it, so a
near copy that one gate catches is the same text to the others.
"""

from __future__ import annotations

import re

_NON_WORD = re.compile(r"[\W_]+")
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
