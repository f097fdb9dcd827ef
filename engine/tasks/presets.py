"""Built-in tasks as config presets: a user's task config overlays these values.

Hub defaults need network access; point `data.train`/`data.test` at local files otherwise
(jobs/configs/ has examples that read ../shared/data).
"""

TREC_LABELS = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]

PRESETS: dict[str, dict] = {
    "arithmetic": {
        "type": "arithmetic",
        "description": "Two-step arithmetic word problems, generated from the run seed.",
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
}
