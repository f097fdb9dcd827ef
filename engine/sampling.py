"""Sampling parameters of a request: built once, then carried by the request row.

A request row's `sampling` column (canonical JSON) is the one source of truth for how it is
answered: the response cache keys on it, the vLLM replica or API call is made with it, and
the lineage of every synthetic row copies it. Nothing downstream recomputes it from config.
"""

from __future__ import annotations

import json

from engine.config import GenerationConfig, SamplingOverride

# Keys an OpenAI-compatible chat completions API accepts; the others are vLLM-only.
API_KEYS = ("temperature", "top_p", "max_tokens")


def sampling_params(role: GenerationConfig, task: SamplingOverride | None = None) -> dict:
    """The role's sampling settings, with the task's own values over them. No per-request
    seed: on CPU it crashed the engine ("CPU Generator does not use offset"); engines are
    seeded instead."""
    params = {"temperature": role.temperature, "top_p": role.top_p,
              "max_tokens": role.max_tokens}
    if task is not None:
        params.update(task.model_dump(exclude_none=True))
    if role.ignore_eos:
        params["ignore_eos"] = True
    return params


def to_json(params: dict) -> str:
    """The canonical text a request row carries: equal parameters, equal text."""
    return json.dumps(params, sort_keys=True)


def api_params(params: dict) -> dict:
    """The parameters an OpenAI-compatible API takes (vLLM-only keys such as ignore_eos are
    not sent)."""
    return {k: v for k, v in params.items() if k in API_KEYS}
