"""Quality gates for teacher-written candidates: pure functions and in-memory indexes.

- words: the one text model (`words_of`, `normalize`) every gate sees a text through.
- text: rules on one text (`degenerate_reason`, `label_names_reason`, `prompt_echo_reason`,
  `self_description_reason`, `template_words`, `task_talk_words`) and the task's text shape
  (`TextStyle`).
- hashing: deterministic word / n-gram hash kernels and sorted-array lookups.
- near_dup: `NearDuplicateIndex`, MinHash + LSH over word 3-grams; first one wins in a round.
- leak: `NgramLeakIndex`, decontamination against protected rows (13-gram, exact, near copy).

Only numpy beyond the standard library, so importing this stays light.
"""

from engine.gates.leak import NgramLeakIndex
from engine.gates.near_dup import NearDuplicateIndex
from engine.gates.text import (TextStyle, degenerate_reason, label_names_reason,
                               prompt_echo_reason, self_description_reason, task_talk_words,
                               template_words)
from engine.gates.words import normalize, words_of

__all__ = ["NearDuplicateIndex", "NgramLeakIndex", "TextStyle", "degenerate_reason",
           "label_names_reason", "normalize", "prompt_echo_reason", "self_description_reason",
           "task_talk_words", "template_words", "words_of"]
