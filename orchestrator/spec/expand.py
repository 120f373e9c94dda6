"""Expand a validated :class:`SweepSpec` into trials: grid × zip groups × random samples × seeds − exclusions.

Every trial's config is built in full and validated by the engine's ``TrialConfig``, so out-of-range values and
cross-field problems surface here, before anything is submitted, located at the line that set the value.
Trial ids come from :func:`orchestrator.trial.trial_id` (a hash of the resolved config).
"""
from __future__ import annotations

import copy
import itertools
import json
import random
from dataclasses import dataclass, field
from typing import Any, Iterator

from pydantic import ValidationError

from convit.config import ConfigError, TrialConfig, set_exclusive
from orchestrator.errors import SpecError, SpecIssue
from orchestrator.keys import DocPath, display_key, leaf_name, set_path
from orchestrator.spec.marks import COMMAND_LINE, Provenance
from orchestrator.spec.model import MAX_TRIALS, SEED_KEY, VARIANT_KEY, SweepSpec, base_leaves, variant_leaves
from orchestrator.text import pydantic_problems
from orchestrator.trial import Trial, trial_id


# ------------------------------------------------------------------------------------------------ combinations
@dataclass
class _Point:
    axes: dict[str, Any]
    paths: dict[str, DocPath]
    settings: dict[str, Any] = field(default_factory=dict)  # trial keys a named variant sets (not axes)


def _combinations(spec: SweepSpec) -> Iterator[_Point]:
    dims: list[list[_Point]] = []
    if spec.variants:
        dims.append([_variant_point(spec, name) for name in spec.variant_names()])
    for key, values in spec.grid.items():
        if key == VARIANT_KEY and spec.variants:
            continue  # a selection of variants, expanded above
        dims.append([_Point({key: v}, {key: ("grid", key, i)}) for i, v in enumerate(values)])
    for g, group in enumerate(spec.zip):
        n = min((len(v) for v in group.values()), default=0)
        dims.append([_Point({k: vals[i] for k, vals in group.items()},
                            {k: ("zip", g, k, i) for k in group}) for i in range(n)])
    if spec.random is not None:
        dims.append(list(_random_points(spec)))
    if spec.seeds is not None:
        dims.append([_Point({SEED_KEY: s}, {SEED_KEY: ("seeds", i)}) for i, s in enumerate(spec.seeds)])
    dims = [d for d in dims if d]  # an empty axis is reported by the spec; still check the other values
    for combo in itertools.product(*dims):
        point = _Point({}, {})
        for part in combo:
            point.axes.update(part.axes)
            point.paths.update(part.paths)
            point.settings.update(part.settings)
        yield point


def _variant_point(spec: SweepSpec, name: str) -> _Point:
    leaves = variant_leaves(spec, name) if isinstance(spec.variants.get(name), dict) else []
    return _Point({VARIANT_KEY: name}, {VARIANT_KEY: ("variants", name), **{k: p for k, _, p in leaves}},
                  {k: v for k, v, _ in leaves})


def _random_points(spec: SweepSpec) -> Iterator[_Point]:
    """Sample i draws its axes in sorted key order from one seeded generator: stable whatever the YAML order."""
    assert spec.random is not None
    rng = random.Random(spec.random.seed)
    keys = sorted(spec.random.axes)
    for _ in range(spec.random.samples):
        values = {k: spec.random.axes[k].sample(rng) for k in keys}
        yield _Point(values, {k: ("random", "axes", k) for k in keys})


def _excluded(axes: dict[str, Any], rules: list[dict[str, Any]]) -> bool:
    """A rule drops a trial when every key matches; a list value in a rule matches any of its items."""
    for rule in rules:
        if rule and all(_matches(axes.get(k, _MISSING), v) for k, v in rule.items()):
            return True
    return False


_MISSING = object()


def _matches(value: Any, wanted: Any) -> bool:
    if value is _MISSING:
        return False
    if isinstance(wanted, list) and not isinstance(value, list):
        return any(_same(value, w) for w in wanted)
    return _same(value, wanted)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


# ---------------------------------------------------------------------------------------------- resolving
def resolve_base(spec: SweepSpec) -> tuple[dict[str, Any], Provenance]:
    """The preset's full config (or the engine defaults) with ``base``'s keys merged in.

    A key of an exclusive group (the budget: epochs / train_images / train_steps; the warm-up) set in
    ``base`` replaces the preset's choice in that group (convit.config.set_exclusive)."""
    prov = Provenance(spec.marks)
    config: dict[str, Any] = {}
    if spec.preset is not None:
        config = TrialConfig.preset(spec.preset).model_dump(mode="json")
    leaves = base_leaves(spec.base)
    set_exclusive(config, {key: value for key, value, _ in leaves if "." not in key})
    for key, value, path in leaves:
        set_path(config, key, value)
        prov.paths[key] = path
    return config, prov


def trial_name(axes: dict[str, Any]) -> str:
    """'model=convit_tiny,fraction=0.1,seed=0': the last part of each key unless two axes share it."""
    leaves = [leaf_name(k) for k in axes]
    parts = []
    for key, value in axes.items():
        label = leaf_name(key) if leaves.count(leaf_name(key)) == 1 else key
        parts.append(f"{label}={_fmt(value)}")
    return ",".join(parts)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def expand(spec: SweepSpec, *, whole_sweep_checks: bool = True, max_trials: int = MAX_TRIALS) -> list[Trial]:
    """All trials of the sweep, in a stable order; raises :class:`SpecError` listing every problem.

    ``whole_sweep_checks=False`` reports only problems of single trials (used when the file already has
    structural problems, which would make "duplicate trials" or "no trials" misleading). More than
    ``max_trials`` combinations is refused before any is built.
    """
    count = spec.combinations()
    if count > max_trials:
        raise SpecError([spec.marks.issue(_largest_axis(spec), f"the sweep spans {count:,} combinations, more than "
                                                               f"the limit of {max_trials:,} trials; shrink an axis, "
                                                               "or raise the limit with --max-trials")])
    base, prov = resolve_base(spec)
    trials: list[Trial] = []
    issues: list[SpecIssue] = []
    paths_of: dict[str, dict[str, DocPath]] = {}
    for point in _combinations(spec):
        if _excluded(point.axes, spec.exclude):
            continue
        raw = copy.deepcopy(base)
        keys = {k: v for k, v in point.axes.items() if k != VARIANT_KEY} | point.settings
        set_exclusive(raw, {k: v for k, v in keys.items() if "." not in k})
        for key, value in keys.items():
            set_path(raw, key, value)
        name = trial_name(point.axes) or spec.name
        try:
            config = TrialConfig.from_dict(raw)
        except ValueError as exc:
            issues += _validation_issues(exc, prov, point, name)
            continue
        trial = Trial(trial_id(config), name, config, dict(point.axes))
        trials.append(trial)
        paths_of[trial.id + str(len(trials))] = point.paths
    if not issues and whole_sweep_checks:
        issues += _duplicate_issues(spec, trials)
        issues += _unmatched_exclude_values(spec)
        if not trials:
            issues.append(spec.marks.issue(("exclude",) if spec.exclude else (), "the sweep has no trials"
                                           + (" left after the exclude rules" if spec.exclude else ""),
                                           key="exclude" if spec.exclude else ""))
    if issues:
        raise SpecError(issues)
    return trials


def _problems(exc: ValueError) -> list[tuple[str, str]]:
    """(dotted key, message) pairs from the engine's ConfigError or a pydantic ValidationError."""
    if isinstance(exc, ValidationError):
        return pydantic_problems(exc)
    if isinstance(exc, ConfigError):
        return [(issue.path, issue.message) for issue in exc.issues]
    return [("", str(exc))]


def _validation_issues(exc: ValueError, prov: Provenance, point: _Point, name: str) -> list[SpecIssue]:
    """Locate each problem at the line that set the value: an axis item, a base key or the command line."""
    issues = []
    local = Provenance(prov.marks, {**prov.paths, **point.paths})
    for key, message in _problems(exc):
        loc, source = local.locate(key)
        if source in point.settings:  # set by a named variant
            issues.append(SpecIssue(loc.file, loc.line, display_key(point.paths[source]),
                                    message if key == source else f"{key}: {message}"))
        elif source in point.axes:  # the same message for every trial that takes this axis value
            path = point.paths[source]
            shown = display_key(path if path[0] == "random" else path[:-1])
            issues.append(SpecIssue(loc.file, loc.line, shown, message if key == source else f"{key}: {message}"))
        elif key and source == key:
            issues.append(SpecIssue(loc.file, loc.line, key if loc.file == COMMAND_LINE else f"base.{key}", message))
        else:
            issues.append(SpecIssue(loc.file, loc.line, key or "base", f"in trial {name}: {message}"))
    return issues


def _duplicate_issues(spec: SweepSpec, trials: list[Trial]) -> list[SpecIssue]:
    issues = []
    first: dict[str, Trial] = {}
    for trial in trials:
        other = first.setdefault(trial.id, trial)
        if other is trial:
            continue
        differing = [k for k in trial.axes if repr(trial.axes[k]) != repr(other.axes.get(k))]
        key = differing[0] if differing else next(iter(trial.axes), "")
        path = _axis_path(spec, key)
        issues.append(spec.marks.issue(path, f"trials '{other.name}' and '{trial.name}' resolve to the same config "
                                             f"(id {trial.id}): the values of '{key}' make no difference here; "
                                             "remove one or add an exclude rule", key=display_key(path)))
    return issues


def _unmatched_exclude_values(spec: SweepSpec) -> list[SpecIssue]:
    """A value in an exclude rule that is none of its axis' values (as the config reads them): the rule would
    silently drop nothing. Axes narrowed on the command line are not held against the file's rules."""
    axis_values: dict[str, list[Any]] = {key: values for key, values in spec.grid.items()}
    for group in spec.zip:
        axis_values.update(group)
    if spec.seeds is not None:
        axis_values[SEED_KEY] = spec.seeds
    issues = []
    for r, rule in enumerate(spec.exclude):
        for key, wanted in rule.items():
            values = axis_values.get(key)
            if values is None or key == VARIANT_KEY or spec.marks.locate(_axis_path(spec, key)).file == COMMAND_LINE:
                continue
            for item in wanted if isinstance(wanted, list) else [wanted]:
                if not any(_same(v, item) for v in values):
                    shown = ", ".join(repr(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
                    issues.append(spec.marks.issue(("exclude", r, key), f"{item!r} is not one of the values of "
                                                                        f"'{key}' ({shown}): the rule drops nothing"))
    return issues


def _largest_axis(spec: SweepSpec) -> DocPath:
    sizes: dict[DocPath, int] = {("grid", k): len(v) for k, v in spec.grid.items()}
    sizes.update({("zip", g): min((len(v) for v in group.values()), default=0) for g, group in enumerate(spec.zip)})
    if spec.random is not None:
        sizes[("random", "samples")] = spec.random.samples
    if spec.seeds is not None:
        sizes[("seeds",)] = len(spec.seeds)
    return max(sizes, key=lambda k: sizes[k]) if sizes else ()


def _axis_path(spec: SweepSpec, key: str) -> DocPath:
    if key == VARIANT_KEY and spec.variants and key not in spec.grid:
        return ("variants",)
    if key in spec.grid:
        return ("grid", key)
    for g, group in enumerate(spec.zip):
        if key in group:
            return ("zip", g, key)
    if spec.random and key in spec.random.axes:
        return ("random", "axes", key)
    if key == SEED_KEY and spec.seeds is not None:
        return ("seeds",)
    return ()


def locate_trial_key(spec: SweepSpec, trial: Trial, key: str) -> SpecIssue:
    """Where ``key`` of ``trial`` was set: its axis item, the base key, the command line, or the preset
    (an issue with an empty message: callers fill it in)."""
    if key in trial.axes:
        path = _axis_path(spec, key)
        loc = spec.marks.locate(path)
        return SpecIssue(loc.file, loc.line, display_key(path), "")
    _, prov = resolve_base(spec)
    loc, source = prov.locate(key)
    if source == key:
        return SpecIssue(loc.file, loc.line, key if loc.file == COMMAND_LINE else f"base.{key}", "")
    return SpecIssue(loc.file, loc.line, f"base.{key}" if spec.preset is None else
                     f"base.{key} (from preset '{spec.preset}')", "")
