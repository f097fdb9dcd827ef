"""Loading a config: YAML plus `a.b=c` overrides, every problem reported at once with its
dotted path; and the settings listing `llm2llm config` prints."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from engine.config.run import RunConfig
from engine.errors import ConfigError


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=1e-4` -> (["train", "lr"], 1e-4). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {text!r} has an empty key part")
    return key.split("."), yaml.safe_load(raw) if raw != "" else ""


def _apply_override(tree: dict, path: list[str], value: Any) -> None:
    node: Any = tree
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            node = node[int(part)]
            continue
        nxt = path[i + 1]
        node = node.setdefault(part, [] if nxt.isdigit() else {})
    last = path[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _format_error(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "<root>"
    if err["type"] == "extra_forbidden":
        known = _keys_at(err["loc"][:-1])
        return f"{loc}: unknown key{did_you_mean(str(err['loc'][-1]), known)} (`llm2llm config` " \
               f"lists every setting)"
    return f"{loc}: {err['msg']} (got {err.get('input')!r})"


def did_you_mean(word: str, choices) -> str:
    """'; did you mean X?' for the nearest of choices, or '' if none is near."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _keys_at(loc: tuple) -> list[str]:
    """The setting names valid at a location of the config tree (an index in a list of
    sections is skipped), for suggestions."""
    model: type[BaseModel] | None = RunConfig
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        info = model.model_fields.get(str(part))
        model = _nested_model(info.annotation) if info else None
    return list(model.model_fields) if model else []


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Load YAML, apply overrides, validate. Raises ConfigError listing every problem."""
    problems: list[str] = []
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError([f"config file {str(p)!r} does not exist"])
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError([f"{p}: not valid YAML: {exc}"]) from None
        if not isinstance(tree, dict):
            raise ConfigError([f"{p}: top level must be a mapping, got {type(tree).__name__}"])
    for text in overrides:
        try:
            keys, value = parse_override(text)
            _apply_override(tree, keys, value)
        except (ValueError, IndexError, TypeError, AttributeError) as exc:
            problems.append(f"override {text!r}: {exc}")
    try:
        cfg = RunConfig.model_validate(tree)
    except ValidationError as exc:
        problems.extend(_format_error(e) for e in exc.errors())
        cfg = None
    if problems:
        raise ConfigError(problems)
    return cfg


def describe_settings(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[tuple]:
    """(dotted path, type, default, description) of every setting, from the Field
    descriptions: what `llm2llm config` prints."""
    rows = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _nested_model(info.annotation)
        if nested is not None:
            rows.append((path, nested.__name__, "", info.description or ""))
            child = f"{path}.<i>." if _is_list(info.annotation) else f"{path}."
            rows += describe_settings(nested, child)
            continue
        default = "required" if info.is_required() else repr(info.get_default())
        rows.append((path, _type_name(info.annotation), default, info.description or ""))
    return rows


def _nested_model(annotation) -> type[BaseModel] | None:
    """The config class inside `X`, `X | None` or `list[X]`, if any."""
    import typing

    candidates = [annotation, *typing.get_args(annotation)]
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def _is_list(annotation) -> bool:
    import typing

    return typing.get_origin(annotation) is list


def _type_name(annotation) -> str:
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Annotated:
        return _type_name(args[0])
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))
