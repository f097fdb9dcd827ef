"""Text gates: rules that reject a candidate by its text alone, each written once.

- `degenerate_reason`: every task's gate after parsing: control_chars, label_names,
  repetition, hyphen_chain, prompt_echo, empty ("" for a real-looking example).
- `label_names_reason`, `prompt_echo_reason`: those two rules on their own; a task's parser
  asks them in their stricter variant (a keyword names it) while reading the teacher's answer.
- `TextStyle`: the shape of the task's real texts (question or not, length).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

from engine.gates.words import words_of

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
# The prompt parroted back, or talk about examples instead of one ("This is a similar
# example.", "The correct answer is ENTY"): seen from small teachers. One is enough.
_ECHO_PHRASE = re.compile(r"correct (label|answer)|^text\s*:|\blabel\s*:|\bthe answer is\b|"
                          r"\bsimilar (example|text|question)|\bthis is an? (\w+ )?example\b|"
                          r"\bexample of an?\b|^please\b", re.I)


def template_words(*templates: str) -> frozenset[str]:
    """prompt_words for `degenerate_reason`: the words of prompt templates, placeholders cut.

    Pass the instruction templates (teacher system and user prompts), not rendered prompts or
    a one-shot example: those hold a real example, and a good new one shares its words.
    """
    return frozenset(chain.from_iterable(words_of(_PLACEHOLDER.sub(" ", t)) for t in templates))


def degenerate_reason(text: str, labels: list[str],
                      prompt_words: frozenset[str] | set[str] = frozenset()) -> str:
    """"" when `text` looks like a real example, else "<kind>: <detail>", kind one of
    control_chars, label_names, repetition, hyphen_chain, prompt_echo, empty. prompt_words:
    see `template_words`."""
    words = words_of(text)
    if not words:
        return "empty: no words"
    return (_control_reason(text) or _mostly_label_names(words, labels)
            or _repetition_reason(words)
            or _hyphen_chain_reason(text) or _mostly_prompt_words(words, prompt_words))


# ---------------------------------------------------------------- control_chars
# Terminal escapes (C0 controls but a text's own line breaks and tabs, DEL, and the C1 codes
# that start a terminal sequence: DCS, SOS, CSI, ST, OSC, PM, APC), and the bidirectional
# overrides that make a text display as another: no example has them, and shown raw they
# drive a terminal (clear it, set its title, write the clipboard). Other C1 codes are left:
# real reviews hold them as Windows-1252 punctuation read as Latin-1 (IMDb: 0x85, 0x96).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x90\x98\x9b-\x9f\u202a-\u202e"
                      r"\u2066-\u2069]")


def _control_reason(text: str) -> str:
    found = _CONTROL.search(text)
    return f"control_chars: U+{ord(found.group()):04X} at {found.start()}" if found else ""


# ---------------------------------------------------------------- label_names

def label_names_reason(text: str, labels: list[str], *, any_code_mention: bool = False) -> str:
    """label_names: the text names the task's labels instead of being an example of one.

    Default (every task's gate, in `degenerate_reason`): more than half its words are label
    names, matched on its words ("Search Creative Work" too), since a real text may name its
    label ("positive impression").
    any_code_mention (classification's parser): one label that is a code, not a word ("ENTY",
    "SearchCreativeWork"), written as is anywhere in the text: real texts never contain one,
    a teacher that confuses text and label does. A label that is a word ("Sports", "World")
    is not a code: a real news item names its topic ("Fox Sports Tonight ...").
    """
    if any_code_mention:
        return _code_mentioned(text, labels)
    words = words_of(text)
    return _mostly_label_names(words, labels) if words else ""


def _code_mentioned(text: str, labels: list[str]) -> str:
    for label in filter(is_code, labels):
        if re.search(rf"(?<!\w){re.escape(label)}(?!\w)", text):
            return f"label_names: mentions the label {label}"
    return ""


def is_code(label: str) -> bool:
    """A label written as a code, not a word: capitals ("ENTY", "NUM", "DESC_2") or joined
    words ("SearchCreativeWork"). "Sports", "Sci/Tech" and "positive" are words."""
    return bool(re.fullmatch(r"[A-Z][A-Z0-9_]+", label) or re.search(r"[a-z][A-Z]", label))


def _mostly_label_names(words: list[str], labels: list[str]) -> str:
    phrases = _label_phrases(tuple(labels))
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


# ---------------------------------------------------------------- repetition

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


# Hyphen-joined words in one token, at most, in 136,567 real texts of shared/data (TREC,
# SST-2, IMDb, RTE, QNLI, GSM8K, AdversarialQA): 17, in an IMDb review; a chain that is most of
# a short text is none of them. A teacher ran on into a 40-word chain.
_CHAIN_MAX, _CHAIN_SHARE_MIN = 20, 8


def _hyphen_chain_reason(text: str) -> str:
    chains = [len([p for p in re.split(r"-+", t) if p]) or 1 for t in text.split()]
    longest, words = max(chains, default=0), sum(chains)
    if longest >= _CHAIN_MAX or (longest >= _CHAIN_SHARE_MIN and longest * 2 >= words):
        return f"hyphen_chain: {longest} of its {words} words joined by hyphens"
    return ""


# ---------------------------------------------------------------- prompt_echo

def prompt_echo_reason(text: str, prompt_words: frozenset[str] | set[str] = frozenset(), *,
                       any_echo_phrase: bool = False) -> str:
    """prompt_echo: the teacher's prompt or talk about examples, not an example.

    Default (every task's gate, in `degenerate_reason`): mostly the prompt's own words (see
    `_mostly_prompt_words`); prompt_words: see `template_words`.
    any_echo_phrase (classification's parser, on each text of an example): one phrase of
    prompt talk anywhere ("the correct label", "Label:", "a similar example", a leading
    "Please") rejects it, whatever its length; prompt_words are not used. Its reason is the
    bare "prompt_echo".
    """
    if any_echo_phrase:
        return "prompt_echo" if _ECHO_PHRASE.search(text) else ""
    words = words_of(text)
    return _mostly_prompt_words(words, prompt_words) if words else ""


def _mostly_prompt_words(words: list[str], prompt_words: frozenset[str] | set[str]) -> str:
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


# ---------------------------------------------------------------- self_description

def task_talk_words(description: str, labels: list[str], real_texts: list[str]) -> frozenset[str]:
    """The words a text uses to talk about the task instead of being an example of it: the
    task description's and the chat/task-talk words (ECHO_WORDS), less those any of the task's
    real texts use, stop words and the labels' own words. Empty without real texts (there is
    then nothing to tell a task's word from a talk word by). SST-2: review, sentence,
    sentiment, classify, text, label, ...; "movie" is not one (real reviews say it)."""
    if not real_texts:
        return frozenset()
    used = {w for text in real_texts for w in words_of(text)}
    talk = set(words_of(description)) | ECHO_WORDS
    return frozenset(talk - used - STOP_WORDS - _label_words(tuple(labels)))


@lru_cache(maxsize=64)
def _label_words(labels: tuple[str, ...]) -> frozenset[str]:
    """The labels' words that are not stop words ("not_entailment": entailment)."""
    return frozenset(w for label in labels for w in words_of(_CAMEL.sub(" ", label))
                     if w not in STOP_WORDS)


def self_description_reason(text: str, labels: list[str], talk_words: frozenset[str]) -> str:
    """self_description: the text names a label and talks about the task ("The film review
    contains a positive sentiment.", "This is a text written in a negative tone"): a
    description of an example, not one. Measured: none of 30,000 real SST-2, IMDb, RTE and QNLI
    rows does so with the talk words learnt from 200 of them; 42-46 of the 347-389 rows the
    bundled teacher wrote for SST-2's seed did, those read all such descriptions."""
    if not talk_words or not labels:
        return ""
    words = set(words_of(text))
    named = sorted(words & _label_words(tuple(labels)))
    talk = sorted(words & talk_words)
    if named and talk:
        return (f"self_description: names the label word {named[0]!r} and talks about the "
                f"task ({', '.join(map(repr, talk[:3]))}: no real text here uses it)")
    return ""


# ---------------------------------------------------------------- style

@dataclass(frozen=True)
class TextStyle:
    """The shape of the task's real texts, learnt from the training set: a candidate of
    another shape (a statement where every real text is a question, a paragraph where they
    are one line) is not an example of the task, however it parses."""

    questions: bool  # nearly every real text ends with "?"
    shortest: int  # words of the shortest and longest real text (0: none known)
    longest: int

    @classmethod
    def of(cls, texts: list[str]) -> "TextStyle":
        lengths = [len(t.split()) for t in texts]
        asks = sum(t.rstrip().endswith("?") for t in texts)
        return cls(questions=len(texts) >= 10 and asks >= 0.9 * len(texts),
                   shortest=min(lengths, default=0), longest=max(lengths, default=0))

    def reason(self, text: str) -> str:
        if self.questions and not text.rstrip().endswith("?"):
            return "style: the task's texts are questions; this is not one"
        n = len(text.split())
        if self.longest and not self.shortest // 2 <= n <= 2 * self.longest:
            return f"style: {n} words; real texts have {self.shortest} to {self.longest}"
        return ""
