"""Dotted trial keys (``model_kwargs.locality_strength``): the one place that reads, writes, flattens and parses
them, so that the sweep language, the expansion, the command line and PBT agree on what a key means."""
from __future__ import annotations

import copy
import re
from typing import Any, Iterable, Mapping

import yaml

DocPath = tuple[str | int, ...]  # a path in a YAML document: ('grid', 'lr', 2)


class YamlLoader(yaml.SafeLoader):
    """The safe loader (no tags that build objects), reading numbers as YAML 1.2 does: ``1e-3`` is the float
    0.001, not the string "1e-3" (PyYAML follows YAML 1.1, which wants a dot: ``1.0e-3``). An exclude rule
    ``{lr: 0.001}`` must match the axis value ``1e-3``."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - YamlLoader is a SafeLoader


def display_key(path: Iterable[str | int]) -> str:
    """('grid', 'lr', 2) → 'grid.lr[2]': how a document path is shown to the user."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def leaf_name(key: str) -> str:
    """'model_kwargs.locality_strength' → 'locality_strength' (a short column or label)."""
    return key.split(".")[-1]


def get_path(data: dict[str, Any], key: str) -> Any:
    """The value at a dotted key of nested mappings, None where a part is missing."""
    node: Any = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def set_path(config: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key, creating intermediate mappings; a mapping value merges into an existing one."""
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {} if child is None or not hasattr(child, "model_dump") else child.model_dump()
            node[part] = child
        node = child
    leaf = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(leaf), dict):  # merge ({} merges nothing: keeps the preset's)
        for k, v in value.items():
            set_path(node[leaf], k, v)
    else:
        node[leaf] = copy.deepcopy(value)


def set_nested(doc: dict[str, Any], parts: list[str], value: Any) -> bool:
    """Set ``doc[parts[0]]...[parts[-1]] = value``; False when a part on the way is not a mapping."""
    node = doc
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            return False
        node = nxt
    node[parts[-1]] = value
    return True


def leaves(mapping: dict[str, Any], section: str, path: DocPath = (),
           skip: tuple[str, ...] = ("preset",)) -> list[tuple[str, Any, DocPath]]:
    """Flatten nested trial settings into (dotted key, value, document path under ``section``); top-level keys
    in ``skip`` (the preset name) are not settings."""
    out = []
    for key, value in mapping.items():
        if not path and key in skip:
            continue
        if isinstance(value, dict):  # nested settings merge into the preset's; an empty mapping changes nothing
            out += [(f"{key}.{k}", v, p) for k, v, p in leaves(value, section, path + (key,), skip)]
        else:
            out.append((key, value, (section, *path, key)))
    return out


def flat(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings → {dotted key: value}, values untouched (orchestrator.tracking.flatten stringifies them
    for MLflow's params); an empty mapping is a value."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """'model_kwargs.locality_strength=0.1' → ('model_kwargs.locality_strength', 0.1); values are YAML.

    Raises ValueError (with the reason) for text that is not ``key=value`` or whose value is not YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"'{text}' is not key=value")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ValueError(f"the value of '{key}' is not valid YAML: {exc}") from exc
    return key.strip(), value
