"""Trial keys against the engine's schema (convit.config.TrialConfig, torch-free): every dotted key, and for an
unknown one a message that says what was probably meant."""
from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from convit.config import TrialConfig
from orchestrator.keys import leaf_name
from orchestrator.text import close_matches


def submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = submodel(arg)
        if found is not None:
            return found
    return None


def _is_mapping(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is dict or origin is dict or origin is typing.Mapping:
        return True
    return any(_is_mapping(a) for a in typing.get_args(annotation))


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    out = {}
    for name, info in model.model_fields.items():
        out[name] = info.annotation
        if info.alias and info.alias != name:
            out[info.alias] = info.annotation
    return out


def known_trial_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Every dotted key of the trial schema (sub-models expanded), for suggestions."""
    model = model or TrialConfig
    keys = []
    for name, annotation in _fields(model).items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        sub = submodel(annotation)
        if sub is not None:
            keys += known_trial_keys(sub, dotted + ".")
    return keys


def check_trial_key(key: str) -> str | None:
    """None if ``key`` names a trial setting, else a message saying what is wrong and what was probably meant."""
    model: type[BaseModel] = TrialConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = _fields(model)
        if part not in fields:
            return f"unknown trial key '{key}'{_suggest(key, parts, i, fields)}"
        annotation = fields[part]
        sub = submodel(annotation)
        if sub is not None:
            model = sub
            continue
        if i < len(parts) - 1 and not _is_mapping(annotation):
            return f"'{'.'.join(parts[:i + 1])}' is a single value; it has no key '{parts[i + 1]}'"
        return None
    return None


def _suggest(key: str, parts: list[str], i: int, fields: dict[str, Any]) -> str:
    prefix = ".".join(parts[:i])
    local = close_matches(parts[i], fields, n=2)
    if local:  # two when both are close ('fraction': data_fraction or val_fraction)
        named = [f"'{'.'.join([*parts[:i], k, *parts[i + 1:]])}'" for k in local]
        return f" (did you mean {' or '.join(named)}?)"
    everything = known_trial_keys()
    same_leaf = [k for k in everything if leaf_name(k) == parts[-1] and k != key]
    close = same_leaf or close_matches(key, everything)
    if close:
        return f" (did you mean '{close[0]}'?)"
    where = f"under '{prefix}'" if prefix else "at the top level"
    return f"; known keys {where}: {', '.join(sorted(fields))}"

