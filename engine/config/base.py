"""What every config section shares: unknown keys refused, the built-in model names."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_ENCODER = "all-minilm-l6-v2"  # the encoder student (student.kind: sequence_classification)


class Strict(BaseModel):
    # An unknown key is a typo until proven otherwise: refuse it.
    model_config = ConfigDict(extra="forbid")
