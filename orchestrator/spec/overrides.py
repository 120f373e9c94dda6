"""``key=value`` overrides from the command line, applied to the parsed document before validation: sweep
sections by name, anything else a trial key on ``base``. Each is located at ``<command line>``."""
from __future__ import annotations

from typing import Any, Sequence

from convit.config import exclusive_siblings
from orchestrator.errors import SpecIssue
from orchestrator.keys import DocPath, parse_override, set_nested
from orchestrator.spec.marks import COMMAND_LINE, Location, Marks
from orchestrator.spec.model import SECTIONS


def apply_overrides(doc: dict[str, Any], marks: Marks, overrides: Sequence[str]) -> list[SpecIssue]:
    """Sweep sections by name (``grid.lr=[...]``, ``local.max_parallel=2``, ``seeds=[0]``); anything else is a
    trial key set on ``base`` for every trial."""
    issues = []
    given = [text.partition("=")[0].strip().removeprefix("base.") for text in overrides]
    for text in overrides:
        try:
            key, value = parse_override(text)
        except ValueError as exc:
            issues.append(SpecIssue(COMMAND_LINE, None, text, str(exc)))
            continue
        clash = [k for k in exclusive_siblings(key.removeprefix("base.")) if k in given]
        if clash:
            issues.append(SpecIssue(COMMAND_LINE, None, key, f"also given: {', '.join(clash)}; the budget and the "
                                                             "warm-up are each stated once"))
            continue
        head, _, rest = key.partition(".")
        if head in ("grid", "random") and rest:
            section = doc.setdefault(head, {}) if isinstance(doc.get(head), dict) or head not in doc else None
            if section is None:
                issues.append(SpecIssue(COMMAND_LINE, None, key, f"'{head}' is not a mapping in the file"))
                continue
            if head == "random" and rest.startswith("axes."):
                section.setdefault("axes", {})[rest[5:]] = value
                path: DocPath = (head, "axes", rest[5:])
            elif head == "random":
                section[rest] = value
                path = (head, rest)
            else:
                section[rest] = value
                path = (head, rest)
        elif head in SECTIONS and head != "base":
            path = (head, *rest.split(".")) if rest else (head,)
            if not set_nested(doc, list(path), value):
                issues.append(SpecIssue(COMMAND_LINE, None, key, f"'{head}' is not a mapping in the file"))
                continue
        else:
            trial_key = rest if head == "base" else key
            base = doc.get("base")
            if base is None or isinstance(base, str):
                base = {"preset": base} if isinstance(base, str) else {}
                doc["base"] = base
            if not isinstance(base, dict):
                issues.append(SpecIssue(COMMAND_LINE, None, key, "'base' is not a mapping in the file"))
                continue
            for sibling in exclusive_siblings(trial_key):  # the command line replaces the file's choice
                base.pop(sibling, None)
            base[trial_key] = value
            path = ("base", trial_key)
        marks.set(path, Location(COMMAND_LINE, None), overwrite=True)
    return issues

