"""Checks that need the engine's schema, run once the document has validated: unknown trial keys (with a
"did you mean"), axis conflicts, empty axes, zip lengths, variants, exclude rules, command-line keys an axis
would silently overrule. Every problem is collected; none stops the others."""
from __future__ import annotations

import re
from typing import Any

from convit.config import exclusive_siblings
from convit.presets import PRESETS
from orchestrator.errors import SpecIssue
from orchestrator.keys import DocPath, display_key
from orchestrator.spec.marks import COMMAND_LINE, Marks
from orchestrator.spec.model import NAME_PATTERN, SEED_KEY, VARIANT_KEY, SweepSpec, base_leaves, variant_leaves
from orchestrator.spec.trial_keys import check_trial_key
from orchestrator.text import close_matches, did_you_mean


def semantic_issues(spec: SweepSpec, marks: Marks) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    issues += _base_key_issues(spec, marks)
    issues += _axis_issues(spec, marks)
    issues += _variant_issues(spec, marks)
    issues += _exclude_issues(spec, marks)
    return issues


def _base_key_issues(spec: SweepSpec, marks: Marks) -> list[SpecIssue]:
    issues = []
    preset = spec.base.get("preset")
    if preset is not None and not isinstance(preset, str):
        issues.append(marks.issue(("base", "preset"), "a preset is given by name, e.g. preset: cifar"))
    elif preset is not None:
        message = check_preset(preset)
        if message:
            issues.append(marks.issue(("base", "preset"), message))
    axes = set(spec.axis_keys())
    for key, _, path in base_leaves(spec.base):
        message = check_trial_key(key)
        if message:
            issues.append(marks.issue(path, message, key=f"base.{key}"))
        elif key in axes and marks.locate(path).file == COMMAND_LINE:
            section = "seeds" if key == SEED_KEY else f"grid.{key}"
            issues.append(marks.issue(path, f"'{key}' is a sweep axis; override the axis instead ({section}=[...])",
                                      key=key))
        elif marks.locate(path).file == COMMAND_LINE:
            issues += _shadowed_override(spec, marks, key, path, axes)
    return issues


def _shadowed_override(spec: SweepSpec, marks: Marks, key: str, path: DocPath, axes: set[str]) -> list[SpecIssue]:
    """A command-line key that an axis or a variant would silently override (or replace, for the budget and
    warm-up groups) is refused: it would look applied and not be."""
    issues = []
    rivals = [k for k in (key, *exclusive_siblings(key)) if k in axes]
    if rivals:
        issues.append(marks.issue(path, f"the sweep axis '{rivals[0]}' decides this for every trial; override the "
                                        f"axis instead (grid.{rivals[0]}=[...])", key=key))
    for name, settings in spec.variants.items():
        if isinstance(settings, dict) and {k for k, _, _ in variant_leaves(spec, name)} & {key, *exclusive_siblings(key)}:
            issues.append(marks.issue(path, f"variant '{name}' sets this; edit the variant (variants.{name}) instead",
                                      key=key))
    return issues


def check_preset(name: str) -> str | None:
    """None for a preset of the engine (convit.presets), else what is wrong and the names there are."""
    if name in PRESETS:
        return None
    names = sorted(PRESETS)
    return f"unknown preset '{name}'{did_you_mean(name, names) or '; presets: ' + ', '.join(names)}"



def _axis_sources(spec: SweepSpec) -> list[tuple[str, DocPath, list[Any]]]:
    """(key, document path of the axis, values) for grid and zip axes."""
    out = [(key, ("grid", key), values) for key, values in spec.grid.items()]
    for g, group in enumerate(spec.zip):
        out += [(key, ("zip", g, key), values) for key, values in group.items()]
    return out


def _axis_issues(spec: SweepSpec, marks: Marks) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    seen: dict[str, DocPath] = {}
    declared = [(k, p) for k, p, _ in _axis_sources(spec)]
    if spec.random:
        declared += [(k, ("random", "axes", k)) for k in spec.random.axes]
    if spec.seeds is not None:
        declared.append((SEED_KEY, ("seeds",)))
    for key, path in declared:
        if key == VARIANT_KEY and path == ("grid", VARIANT_KEY):
            issues += _variant_selection_issues(spec, marks)
            seen.setdefault(key, path)
            continue
        message = check_trial_key(key) if key != SEED_KEY or path != ("seeds",) else check_trial_key(SEED_KEY)
        if message:
            issues.append(marks.issue(path, message))
        if key in seen:
            issues.append(marks.issue(path, f"'{key}' is already an axis at {display_key(seen[key])} "
                                            f"(line {marks.locate(seen[key]).line}); give each key once"))
        seen.setdefault(key, path)
    for key, path, values in _axis_sources(spec):
        if not values:
            issues.append(marks.issue(path, "axis has no values; give at least one or remove it"))
        if path[0] == "grid":  # zip lists may repeat a value (it varies together with another)
            issues += _duplicate_values(values, path, marks)
    for g, group in enumerate(spec.zip):
        lengths = {key: len(values) for key, values in group.items()}
        if not group:
            issues.append(marks.issue(("zip", g), "zip group is empty"))
        elif len(set(lengths.values())) > 1:
            detail = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            issues.append(marks.issue(("zip", g), f"zip lists must have the same length ({detail})", key="zip"))
    if spec.seeds is not None:
        if not spec.seeds:
            issues.append(marks.issue(("seeds",), "no seeds given; give at least one or remove 'seeds'"))
        issues += _duplicate_values(spec.seeds, ("seeds",), marks)
    if spec.random is not None and not spec.random.axes:
        issues.append(marks.issue(("random", "axes"), "no random axes declared"))
    return issues


def _variant_selection_issues(spec: SweepSpec, marks: Marks) -> list[SpecIssue]:
    """``grid.variant`` selects named variants: each must exist in the ``variants`` section."""
    if not spec.variants:
        return [marks.issue(("grid", VARIANT_KEY), "'variant' selects named configurations, but the file has no "
                                                    "'variants' section")]
    issues = []
    for i, name in enumerate(spec.grid[VARIANT_KEY]):
        if name not in spec.variants:
            hint = did_you_mean(str(name), spec.variants)
            issues.append(marks.issue(("grid", VARIANT_KEY, i), f"no variant named '{name}'{hint}; variants: "
                                                                f"{', '.join(spec.variants)}", key="grid.variant"))
    return issues



def _variant_issues(spec: SweepSpec, marks: Marks) -> list[SpecIssue]:
    issues = []
    for name, settings in spec.variants.items():
        if not re.match(NAME_PATTERN, name):
            issues.append(marks.issue(("variants", name), f"variant name '{name}' must start with a letter or digit, "
                                                          "followed by letters, digits, '_', '.' or '-'"))
        if not isinstance(settings, dict):
            continue
        if "preset" in settings:
            issues.append(marks.issue(("variants", name, "preset"), "a variant cannot change the preset; set keys "
                                                                    "instead", key=f"variants.{name}.preset"))
        for key, _, path in variant_leaves(spec, name):
            message = check_trial_key(key) if key != "preset" else "a variant cannot change the preset"
            if message:
                issues.append(marks.issue(path, message, key=f"variants.{name}.{key}"))
            elif key in spec.axis_keys():
                issues.append(marks.issue(path, f"'{key}' is also a sweep axis; set it in one place",
                                          key=f"variants.{name}.{key}"))
    return issues


def _duplicate_values(values: list[Any], path: DocPath, marks: Marks) -> list[SpecIssue]:
    issues, seen = [], {}
    for i, value in enumerate(values):
        token = repr(value)
        if token in seen:
            issues.append(marks.issue(path + (i,), f"value {value!r} is listed twice (also item {seen[token]})",
                                      key=display_key(path)))
        seen.setdefault(token, i)
    return issues


def _exclude_issues(spec: SweepSpec, marks: Marks) -> list[SpecIssue]:
    issues = []
    axes = spec.axis_keys()
    for r, rule in enumerate(spec.exclude):
        if not rule:
            issues.append(marks.issue(("exclude", r), "empty exclude rule would drop every trial"))
        for key in rule:
            if key == VARIANT_KEY and spec.variants:  # a misspelt variant name would silently exclude nothing
                wanted = rule[key] if isinstance(rule[key], list) else [rule[key]]
                unknown = [w for w in wanted if w not in spec.variants]
                if unknown:
                    issues.append(marks.issue(("exclude", r, key), f"no variant named {', '.join(map(repr, unknown))}; "
                                                                   f"variants: {', '.join(spec.variants)}"))
            if key not in axes:
                hint = did_you_mean(key, axes) or f"; axes: {', '.join(axes) or 'none'}"
                issues.append(marks.issue(("exclude", r, key), f"'{key}' is not a sweep axis{hint}"))
    return issues

