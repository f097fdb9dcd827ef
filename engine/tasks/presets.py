"""Built-in tasks as config presets: a user's task config overlays these values.

Hub defaults need network access; point `data.train`/`data.test` at local files otherwise
(jobs/configs/ has examples that read ../shared/data).
"""

from engine.tasks.reviews import LABELS as REVIEW_LABELS

TREC_LABELS = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]

PRESETS: dict[str, dict] = {
    "arithmetic": {
        "type": "arithmetic",
        "description": "Two-step arithmetic word problems, generated from the run seed.",
    },
    "reviews": {  # generated from the run seed too (engine/tasks/reviews.py): the demo's task
        "type": "reviews",
        "fields": {"text": "text", "label": "label"},
        "labels": list(REVIEW_LABELS),  # the generator's, named once
        "description": "Classify the sentiment of the one-sentence movie review.",
        # a few labelled rows, as the task is for (unset, the seed would be half the pool)
        "n_seed": 16, "n_validation": 100, "n_test": 400,
    },
    "gsm8k": {
        "type": "math",
        "fields": {"question": "question", "answer": "answer"},
        "data": {"train": "hub:openai/gsm8k:main@train", "test": "hub:openai/gsm8k:main@test"},
        "description": "Grade-school math word problems.",
    },
    "trec": {
        "type": "classification",
        "fields": {"text": "text", "label": "coarse_label"},
        "labels": TREC_LABELS,
        # the hub copy stores class indices, in this order; local JSONL has the names
        "label_names": {"0": "ABBR", "1": "ENTY", "2": "DESC", "3": "HUM", "4": "LOC", "5": "NUM"},
        "data": {"train": "hub:CogComp/trec@train", "test": "hub:CogComp/trec@test"},
        "description": ("Classify the question by the type of its answer: ABBR (abbreviation), "
                        "DESC (description), ENTY (entity), HUM (human), LOC (location), "
                        "NUM (numeric)."),
    },
    "sst2": {
        "type": "classification",
        "fields": {"text": "sentence", "label": "label"},
        "labels": ["negative", "positive"],
        "label_names": {"0": "negative", "1": "positive"},
        "data": {"train": "hub:stanfordnlp/sst2@train", "test": "hub:stanfordnlp/sst2@validation"},
        "description": "Classify the sentiment of the movie review sentence.",
    },
    "imdb": {
        "type": "classification",
        "fields": {"text": "text", "label": "label"},
        "labels": ["negative", "positive"],
        "label_names": {"0": "negative", "1": "positive"},
        "multiline": True,  # reviews are paragraphs
        "data": {"train": "hub:stanfordnlp/imdb@train", "test": "hub:stanfordnlp/imdb@test"},
        "description": "Classify the sentiment of the movie review.",
    },
    # sentence pairs (GLUE): the hub copies name the two texts sentence1/sentence2 (RTE) and
    # question/sentence (QNLI); label 0 is entailment
    "rte": {
        "type": "classification",
        "fields": {"text": "sentence1", "text_b": "sentence2", "label": "label"},
        "text_names": ["Premise", "Hypothesis"],
        "labels": ["entailment", "not_entailment"],
        "label_names": {"0": "entailment", "1": "not_entailment"},
        "data": {"train": "hub:nyu-mll/glue:rte@train", "test": "hub:nyu-mll/glue:rte@validation"},
        "description": "Does the premise entail the hypothesis?",
    },
    "qnli": {
        "type": "classification",
        "fields": {"text": "question", "text_b": "sentence", "label": "label"},
        "text_names": ["Question", "Sentence"],
        "labels": ["entailment", "not_entailment"],
        "label_names": {"0": "entailment", "1": "not_entailment"},
        "data": {"train": "hub:nyu-mll/glue:qnli@train",
                 "test": "hub:nyu-mll/glue:qnli@validation"},
        "description": "Does the sentence contain the answer to the question?",
    },
    # extractive QA (SQuAD-style answers: {"text": [...], "answer_start": [...]})
    "adversarialqa": {
        "type": "qa",
        "fields": {"context": "context", "question": "question", "answers": "answers"},
        "data": {"train": "hub:UCLNLP/adversarial_qa:adversarialQA@train",
                 "test": "hub:UCLNLP/adversarial_qa:adversarialQA@validation"},
        "description": "Answer the question with a span copied from the context.",
    },
}
