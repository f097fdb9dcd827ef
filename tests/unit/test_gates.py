import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from engine.gates import (NearDuplicateIndex, NgramLeakIndex, TextStyle, degenerate_reason,
                          label_names_reason, normalize, prompt_echo_reason,
                          self_description_reason, task_talk_words, template_words, words_of)
from engine.gates import near_dup

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
TREC = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
SST2 = ["negative", "positive"]
SNIPS = ["AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook",
         "SearchCreativeWork", "SearchScreeningEvent"]
# the shape of prompts/llm2llm/classification.yaml's teacher prompts, with the task
# descriptions of engine/tasks/presets.py (a caller may render those in)
TEACHER = template_words(
    "You are a helpful teacher. Your job is to take examples that a student classifier gets "
    "wrong and write new, different examples with the same label, so the student can learn the "
    "distinction. The task: {description} The labels are: {labels}.",
    "The student was given the following text:\n{text}\nThe correct label is: {label}\n"
    "Please generate {n} similar examples with the same label. Write each one as \"Text: ...\", "
    "then \"Label: {label}\" on the next line.",
    "Classify the question by the type of its answer: ABBR (abbreviation), DESC (description), "
    "ENTY (entity), HUM (human), LOC (location), NUM (numeric).",
    "Classify the sentiment of the movie review sentence.")

# prompts/llm2llm/math.yaml's teacher prompts, one-shot example included (a real example's
# words: a real question made of them must pass)
MATH_TEACHER = template_words(
    "You are a helpful teacher. Your job is to take math problems that students get wrong "
    "and generate new problems like them, so the students can practise.",
    "The student was given the following question:\n{question}\nThe answer key has this as "
    "the rationale and answer:\n{answer}\nPlease generate {n} similar questions with their "
    "answers.",
    "Tom has 3 boxes with 4 apples in each box. He eats 2 apples. How many apples are left?",
    "Question: Mia has 5 bags with 6 marbles in each bag. She gives away 7 marbles. How many "
    "marbles does she have now?\nAnswer: Mia has 5 * 6 = 30 marbles. After giving away 7, "
    "30 - 7 = 23 marbles remain.\n#### 23")


# ---------------------------------------------------------------- degenerate_reason

@pytest.mark.parametrize("text, labels", [
    ("SearchCreativeWork, SearchCreativeWork, BookRestaurant", SNIPS),
    ("Search Creative Work. Book restaurant!", SNIPS),
    ("positive negative positive", SST2),
    ("positive", SST2),
    ("LOC", TREC),
])
def test_label_names_are_rejected(text, labels):
    assert degenerate_reason(text, labels).startswith("label_names: ")


@pytest.mark.parametrize("text, labels", [
    ("The movie was not positive at all, I hated every minute of it", SST2),
    ("positive impression", SST2),  # a real SST-2 phrase: half is not "mostly"
    ("search for the creative work called Dune", SNIPS),  # label words, not the label
    ("What does the abbreviation LOC stand for ?", TREC),
])
def test_a_sentence_mentioning_a_label_passes(text, labels):
    assert degenerate_reason(text, labels) == ""


@pytest.mark.parametrize("text", [
    "The Russian Space Agency (RSNA) - The Russian Space Agency (RSNA) - "
    "The Russian Space Agency (RSNA) - The Russian Space",
    "very very very very very good",
    "What is the capital of France ? " * 6,
    "I loved it. It was great. " + "The acting was superb and the plot was tight. " * 5,
])
def test_repeated_phrases_are_rejected(text):
    assert degenerate_reason(text, SST2).startswith("repetition: ")


@pytest.mark.parametrize("text", [
    "very very good",
    "bad , bad , bad movie",  # real SST-2 rows: a repetition for effect
    "this movie just goes on and on and on and on",
    "good action , good acting , good dialogue , good pace , good cinematography",
])
def test_rhetorical_repetition_passes(text):
    assert degenerate_reason(text, SST2) == ""


@pytest.mark.parametrize("text", [
    "Please generate 2 similar examples with the same label.",
    "Here are 2 new examples with the same label:",
    "Sure! Here are three similar questions:",
])
def test_prompt_echo_is_rejected(text):
    assert degenerate_reason(text, TREC, TEACHER).startswith("prompt_echo: ")
    assert degenerate_reason(text, TREC).startswith("prompt_echo: ")  # chat filler alone


def test_echo_of_the_task_description_is_rejected():
    text = "Classify the sentiment of the movie review sentence."
    assert degenerate_reason(text, SST2, TEACHER).startswith("prompt_echo: ")


@pytest.mark.parametrize("text, prompt", [
    ("What does the student learn?", TEACHER),
    ("Who was the teacher of Alexander the Great ?", TEACHER),
    ("What is the label on a bottle of wine called ?", TEACHER),
    ("What is the correct way to write a text message ?", TEACHER),
    # made of the one-shot example's words, but no chat or task talk
    ("Mia has 5 boxes with 6 marbles in each box. How many marbles are left now?",
     MATH_TEACHER),
])
def test_questions_using_prompt_words_pass(text, prompt):
    assert degenerate_reason(text, TREC, prompt) == ""


@pytest.mark.parametrize("text, labels, mostly, one_code", [
    ("A company 's logo is a SPAM .", ["HAM", "SPAM"], "", "SPAM"),
    ("SPAM SPAM ham", ["HAM", "SPAM"], "3 of 3 words", "SPAM"),
    ("spam spam spam", ["HAM", "SPAM"], "3 of 3 words", ""),  # a code is matched as written
    ("Search Creative Work", SNIPS, "3 of 3 words", ""),
    ("positive positive", SST2, "2 of 2 words", ""),  # a word label is no code
    ("What does the abbreviation LOC stand for ?", TREC, "", "LOC"),
])
def test_label_names_variants(text, labels, mostly, one_code):
    """The gate's rule wants mostly label names; the parser's, one label code as written."""
    assert label_names_reason(text, labels) == (
        f"label_names: {mostly} are label names" if mostly else "")
    assert label_names_reason(text, labels, any_code_mention=True) == (
        f"label_names: mentions the label {one_code}" if one_code else "")
    if mostly:  # the gate's rule is the one degenerate_reason asks first
        assert degenerate_reason(text, labels) == label_names_reason(text, labels)


@pytest.mark.parametrize("text, share, phrase", [
    ("Please generate 2 similar examples with the same label.", True, True),
    ("This is a similar example.", False, True),  # under 3 content words
    ("The correct answer is SPAM", False, True),
    ("Okay, here are the new examples for you", True, False),
    ("What is the label on a bottle of wine called ?", False, False),
])
def test_prompt_echo_variants(text, share, phrase):
    """The gate's rule wants mostly prompt words; the parser's, one phrase of prompt talk."""
    assert prompt_echo_reason(text, TEACHER).startswith("prompt_echo: ") == share
    assert prompt_echo_reason(text, TEACHER) == (
        degenerate_reason(text, TREC, TEACHER) if share else "")
    assert prompt_echo_reason(text, any_echo_phrase=True) == ("prompt_echo" if phrase else "")


def test_empty_text_is_rejected():
    assert degenerate_reason(" ?! ", TREC).startswith("empty: ")


def test_template_words_drop_placeholders():
    assert template_words("Classify {text} as {labels}.") == {"classify", "as"}


def test_candidates_must_have_the_shape_of_the_tasks_texts():
    questions = TextStyle.of([f"What is thing number {i} called ?" for i in range(20)])
    assert questions.reason("Where is Los Angeles?") == ""
    assert questions.reason("This is a very large city.").startswith("style: the task's texts")
    assert questions.reason("Why " + "very " * 40 + "big?").startswith("style: 42 words")
    mixed = TextStyle.of(["A fine film .", "Why did I watch this ?"] * 10)
    assert mixed.reason("A statement is fine here .") == ""
    assert TextStyle.of([]).reason("anything at all goes") == ""


# ---------------------------------------------------------------- NearDuplicateIndex

def test_copy_after_normalization_is_a_duplicate():
    index = NearDuplicateIndex()
    index.add("What is the capital city of France ?", key="trec-1")
    assert index.find("what is the capital city of France") == "trec-1"
    assert index.find("WHAT is the capital city of France!!") == "trec-1"


def test_one_word_edit_in_a_long_question_is_a_duplicate():
    index = NearDuplicateIndex()
    index.add_many(["How many people live in the city of Tokyo in Japan today?"])
    assert index.find("How many people live in the city of Tokyo in Japan now?") is not None
    # an edit in the middle weighs the same as one at the end (boundary tokens)
    assert index.find("How many people live in the town of Tokyo in Japan today?") is not None


def test_distinct_questions_sharing_a_prefix_are_not_duplicates():
    index = NearDuplicateIndex()
    index.add_many(["What is the capital of France ?", "Who wrote Hamlet ?"])
    assert index.find("What is the population of France ?") is None
    assert index.find("What is the capital of Spain ?") is None
    assert index.find("Who wrote Macbeth ?") is None
    assert index.find("Something else entirely, with no shared words") is None


def test_check_and_add_many_first_one_wins():
    index = NearDuplicateIndex()
    index.add_many(["Which river runs through the middle of the old city of Prague ?"],
                   keys=["train-7"])
    texts = ["How many moons does the planet Jupiter have in the year 2024 ?",
             "Which river runs through the middle of the old city of Prague today ?",
             "how many moons does the planet Jupiter have in the year 2024",
             "Name a famous painter who lived in Paris in the nineteenth century .",
             "How many moons does the planet Saturn have in the year 2024 ?"]
    keys = [f"r{i}" for i in range(len(texts))]
    assert index.check_and_add_many(texts, keys) == [None, "train-7", "r0", None, "r0"]
    assert len(index) == 3  # the training row and r0, r3
    assert index.find(texts[3]) == "r3"
    assert index.check_and_add_many([texts[3]]) == ["r3"]  # later calls see accepted rows


def test_a_rejected_row_does_not_reject_its_own_near_copies():
    # b duplicates the indexed row a; c resembles b but not a: c is kept, as b never was
    a = " ".join(f"word{i}" for i in range(20))
    b = a.replace("word19", "other")
    c = b.replace("word0", "first")
    assert gates_jaccard(a, b) >= 0.6 and gates_jaccard(b, c) >= 0.6 > gates_jaccard(a, c)
    index = NearDuplicateIndex()
    index.add(a)
    assert index.check_and_add_many([b, c]) == [a, None]


def gates_jaccard(x: str, y: str) -> float:
    from benchmarks.near_dup import jaccard

    return jaccard(x, y)


def synthetic_rows(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(300)] + ["what", "is", "the", "of", "how", "many"]
    rows = []
    for _ in range(n):
        if rows and rng.random() < 0.2:
            words = rng.choice(rows).split()
            words[rng.randrange(len(words))] = rng.choice(vocab)
        else:
            opening = ["what", "is", "the"][:rng.randint(0, 3)]
            words = opening + rng.choices(vocab, k=rng.randint(5, 20))
        rows.append(" ".join(words))
    return rows


def test_matches_brute_force_over_many_batches(monkeypatch):
    """Small batches exercise chunk merges and matches across batches; the result must be
    the sequential exact-Jaccard filter's, up to LSH's rare misses (never a false match)."""
    from benchmarks.near_dup import shingles

    monkeypatch.setattr(near_dup, "BATCH", 64)
    rows = synthetic_rows(1500)
    found = NearDuplicateIndex().check_and_add_many(rows)
    kept: list[set] = []
    expected = []
    for text in rows:
        s = shingles(text)
        expected.append(any(len(s & k) >= 0.6 * len(s | k) for k in kept))
        if not expected[-1]:
            kept.append(s)
    for text, key in zip(rows, found):
        assert key is None or gates_jaccard(text, key) >= 0.6
    disagree = sum((k is not None) != e for k, e in zip(found, expected))
    assert sum(expected) > 150 and disagree <= 0.01 * sum(expected)


def test_single_adds_and_many_chunks_are_searched(monkeypatch):
    monkeypatch.setattr(near_dup, "BATCH", 16)
    index = NearDuplicateIndex()
    rows = [f"question number {i} about the topic {i * 7} and nothing else" for i in range(200)]
    for i, text in enumerate(rows):
        index.add(text, key=str(i))
    assert len(index) == 200 and len(index._chunks) < 10
    assert [index.find(t) for t in rows[::37]] == [str(i) for i in range(0, 200, 37)]


def test_deterministic_across_instances_and_processes():
    rows = synthetic_rows(300, seed=3)
    first, second = NearDuplicateIndex(), NearDuplicateIndex()
    assert first.check_and_add_many(rows) == second.check_and_add_many(rows)
    code = ("from engine.gates import NearDuplicateIndex, words_of\n"
            "r = NearDuplicateIndex()._features([words_of('Who was the first man on the moon ?'),"
            " ['one']], ['a', 'b'])\n"
            "print(r.sig.tolist(), r.bands.tolist())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=REPO, env={**os.environ, "PYTHONHASHSEED": seed}
                           ).stdout for seed in ("1", "2")}
    assert len(outs) == 1


def test_bands_are_the_longest_that_keep_recall_at_the_threshold():
    for threshold in (0.5, 0.6, 0.8, 0.9):
        index = NearDuplicateIndex(threshold=threshold)
        b, r = index.bands, index.rows_per_band
        assert b * r <= 64 and (1 / b) ** (1 / r) <= threshold
        assert 1 - (1 - threshold ** r) ** b >= 0.95  # a pair at the threshold is a candidate
        assert 1 - (1 - threshold ** (r + 1)) ** (64 // (r + 1)) < 0.95


# ---------------------------------------------------------------- NgramLeakIndex

PROTECTED = ("the committee met on a cold tuesday morning to decide whether the old stone "
             "bridge over the river should be repaired or replaced before the spring floods "
             "arrived and cut the village off from the busy market town for weeks")  # 40 words


def test_shared_13_gram_leaks():
    assert len(words_of(PROTECTED)) == 40
    thirteen = " ".join(words_of(PROTECTED)[10:23])
    candidate = (f"Yesterday my neighbour told me that {thirteen} which surprised everyone at "
                 "the family dinner last night in town")
    assert len(words_of(candidate)) == 30
    index = NgramLeakIndex([PROTECTED, "Who invented the telephone ?"])
    assert index.leak(candidate) == "ngram_leak: shares a 13-gram with a protected row"
    twelve = " ".join(words_of(PROTECTED)[10:22])
    assert index.leak(candidate.replace(thirteen, twelve)) == ""


def test_short_protected_rows_leak_by_exact_or_near_match():
    index = NgramLeakIndex(["Who invented the telephone ?",
                            "How many people live in the city of Tokyo in Japan today ?"])
    assert index.leak("who invented the TELEPHONE").startswith("in_protected_set: ")
    assert index.leak("How many people live in the city of Tokyo in Japan now?") == \
        "in_protected_set: near-duplicate of protected row 1"
    assert index.leak("Who invented the radio ?") == ""
    assert index.leak_many(["Who wrote Hamlet ?", ""]) == ["", ""]

    # treebank-tokenized rows (SST-2: "ca n't") against a teacher's ordinary spelling
    treebank = NgramLeakIndex(["you ca n't wait to see end .", "it 's a charming film"])
    assert treebank.leak("You Can't Wait to See End").startswith("in_protected_set: ")
    assert treebank.leak("It\u2019s a charming film!").startswith("in_protected_set: ")


def test_no_protected_rows_means_no_leaks():
    assert NgramLeakIndex([]).leak("anything at all, really") == ""


# ---------------------------------------------------------------- real data

REAL = [  # (file, text field, labels, prompt words)
    ("trec/train.jsonl", "text", TREC, TEACHER), ("trec/test.jsonl", "text", TREC, TEACHER),
    ("sst2/train.jsonl", "sentence", SST2, TEACHER),
    ("sst2/validation.jsonl", "sentence", SST2, TEACHER),
    ("imdb/test.jsonl", "text", SST2, TEACHER),
    ("imdb/train_sample_every10th.jsonl", "text", SST2, TEACHER),
    ("gsm8k/train.jsonl", "question", [], MATH_TEACHER),
    ("gsm8k/test.jsonl", "question", [], MATH_TEACHER),
]


def real_rows(name: str, field: str, n: int = 200) -> list[str]:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    lines = path.read_text().split("\n")[:-1]
    step = max(len(lines) // n, 1)  # spread over the file
    return [json.loads(line)[field] for line in lines[::step][:n]]


@pytest.mark.parametrize("name, field, labels, prompt", REAL, ids=[r[0] for r in REAL])
def test_real_rows_pass_every_gate(name, field, labels, prompt):
    rows = real_rows(name, field)
    assert [r for r in rows if degenerate_reason(r, labels, prompt)] == []
    distinct = list({normalize(r): r for r in reversed(rows)}.values())[::-1]
    dups = [r for r, k in zip(distinct, NearDuplicateIndex().check_and_add_many(distinct)) if k]
    assert len(dups) <= 0.01 * len(distinct), dups
    # rows of one file against the other rows of it as a protected set
    half = len(distinct) // 2
    leaks = [r for r in NgramLeakIndex(distinct[:half]).leak_many(distinct[half:]) if r]
    assert len(leaks) <= 0.01 * half, leaks


def test_a_label_that_is_a_word_may_be_named_by_a_real_text_a_code_may_not():
    """Issue 29: a 4-topic news task's real items name their topic ("Fox Sports ..."); the
    parser's any-mention rule is for codes (TREC's ENTY, joined words), not for words."""
    from engine.gates.text import is_code

    news = ["World", "Sports", "Business", "Sci/Tech"]
    assert not any(map(is_code, news)) and not any(map(is_code, ["positive", "not_entailment"]))
    assert all(map(is_code, ["ENTY", "HUM", "NUM", "SearchCreativeWork", "DESC_2"]))
    assert label_names_reason("Fox Sports Tonight previews the playoffs", news,
                              any_code_mention=True) == ""
    assert label_names_reason("What ENTY is the largest ?", ["ENTY", "HUM"],
                              any_code_mention=True) == "label_names: mentions the label ENTY"
    # a text that is mostly label names is still one, words or codes
    assert label_names_reason("Sports and World", news).startswith("label_names:")


def test_a_long_hyphen_chain_is_degenerate_and_no_real_row_has_one():
    chain = "-".join(f"word{i}" for i in range(40))
    assert degenerate_reason(f"Stocks fell on Monday as {chain}", []) \
        == "hyphen_chain: 40 of its 45 words joined by hyphens"
    assert degenerate_reason("A-b-c-d-e-f-g-h i j", []).startswith("hyphen_chain: 8 of")
    # real ones: the longest chain in shared/data is 17 words, in a long IMDb review
    imdb = ("I-can-do-it-all-and-you've-got-to-love-me-for-it-kind-of-guy. " + "It was fine "
            "and the cast was good, the plot slow but the ending made up for most of it. " * 2)
    for real in ["A state-of-the-art film with a one-in-a-million cast", imdb]:
        assert degenerate_reason(real, []) == ""


def test_control_characters_are_degenerate_and_line_breaks_are_not():
    """Issue 30: a teacher row holding terminal escapes (clear screen, OSC 52 clipboard) or a
    bidirectional override is rejected; a text's own tabs and line breaks are not."""
    assert degenerate_reason("A fine film \x1b[2J with a cast", []) == "control_chars: U+001B at 12"
    assert degenerate_reason("Copy \x1b]52;c;ZXZpbA==\x07 this", []).startswith("control_chars")
    assert degenerate_reason("The review \u202eesrever ni\u202c reads", []).startswith(
        "control_chars: U+202E")
    assert degenerate_reason("A fine film.\nThe cast\tworks well together.", []) == ""


# ---------------------------------------------------------------- self_description

SST2_DESCRIPTION = "Classify the sentiment of the movie review sentence."


def test_a_text_that_names_its_label_and_talks_about_the_task_describes_an_example():
    real = ["a gripping , funny movie", "the plot is thin and the movie drags", "it 's a mess"]
    talk = task_talk_words(SST2_DESCRIPTION, SST2, real)
    assert {"sentiment", "review", "sentence", "classify"} <= talk
    assert "movie" not in talk and "positive" not in talk  # a real text says it; a label
    for meta in ["The film review contains a positive sentiment.",
                 "This is a text written in a negative tone.",
                 "The movie's a disappointment. Positive sentiment"]:  # the other label too
        assert self_description_reason(meta, SST2, talk).startswith(
            "self_description: names the label word"), meta
    for example in ["The movie was a positive delight from start to finish",  # no task talk
                    "A review of the year's films would leave this one out",  # no label
                    "an unflinching , tender portrait"]:
        assert self_description_reason(example, SST2, talk) == "", example
    # without real texts nothing tells the task's words from talk: the gate does not judge
    assert task_talk_words(SST2_DESCRIPTION, SST2, []) == frozenset()
    assert self_description_reason("The review has a positive sentiment", SST2, frozenset()) == ""


PAIRS = [  # (folder, file, fields, labels, description): the preset tasks' words
    ("sst2", "train.jsonl", ["sentence"], SST2, SST2_DESCRIPTION),
    ("imdb", "test.jsonl", ["text"], SST2, "Classify the sentiment of the movie review."),
    ("rte", "train.jsonl", ["premise", "hypothesis"], ["entailment", "not_entailment"],
     "Does the premise entail the hypothesis?"),
    ("qnli", "validation.jsonl", ["question", "sentence"], ["entailment", "not_entailment"],
     "Does the sentence contain the answer to the question?"),
]


@pytest.mark.parametrize("folder, name, fields, labels, description", PAIRS,
                         ids=[p[0] for p in PAIRS])
def test_no_real_row_describes_itself_by_the_talk_words_of_200_others(
        folder, name, fields, labels, description):
    path = DATA / folder / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    rows = [json.loads(line) for line in path.read_text().split("\n")[:-1]]
    texts = [" ".join(str(r[f]) for f in fields) for r in rows]
    random.Random(0).shuffle(texts)
    talk = task_talk_words(description, labels, texts[:200])
    assert talk  # there is talk to catch
    flagged = [t for t in texts[200:5200] if self_description_reason(t, labels, talk)]
    assert flagged == []
