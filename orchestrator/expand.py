"""Expand a validated :class:`SweepSpec` into trials: grid × zip groups × random samples × seeds − exclusions.

Every trial's config is built in full and validated by the engine's ``TrialConfig``, so out-of-range values and
cross-field problems surface here, before anything is submitted, located at the line that set the value.
A trial's id is a short hash of its resolved config: the same YAML gives the same ids whatever the key order,
and a trial already run elsewhere is recognised by its id.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from pydantic import BaseModel, ValidationError

from convit.config import set_exclusive
from orchestrator.errors import SpecError, SpecIssue
from orchestrator.spec import (COMMAND_LINE, SEED_KEY, VARIANT_KEY, DocPath, Provenance, SweepSpec, base_leaves, display_key,
                               parse_spec_partial, read_spec_text, trial_config_class, variant_leaves)

ID_LENGTH = 12


@dataclass(frozen=True)
class Trial:
    """One training run of a sweep: its id, a readable name, the full config and the swept values."""

    id: str
    name: str
    config: Any  # convit.config.TrialConfig
    axes: dict[str, Any] = field(default_factory=dict)

    def config_dict(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "axes": self.axes, "config": self.config_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Trial":
        config = trial_config_class().model_validate(data["config"])
        return cls(id=data["id"], name=data["name"], config=config, axes=dict(data.get("axes", {})))


def trial_id(config: BaseModel) -> str:
    """The engine's config hash, shortened; a canonical-JSON hash if the engine offers none."""
    hasher = getattr(config, "config_hash", None)
    full = hasher() if callable(hasher) else hashlib.sha256(
        json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    return str(full)[:ID_LENGTH]


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
    if isinstance(value, dict) and isinstance(node.get(leaf), dict) and value:
        for k, v in value.items():
            set_path(node[leaf], k, v)
    else:
        node[leaf] = copy.deepcopy(value)


def resolve_base(spec: SweepSpec) -> tuple[dict[str, Any], Provenance]:
    """The preset's full config (or the engine defaults) with ``base``'s keys merged in.

    A key of an exclusive group (the budget: epochs / train_images / train_steps; the warm-up) set in
    ``base`` replaces the preset's choice in that group (convit.config.set_exclusive)."""
    prov = Provenance(spec.marks)
    config: dict[str, Any] = {}
    if spec.preset is not None:
        config = trial_config_class().preset(spec.preset).model_dump(mode="json")  # type: ignore[attr-defined]
    leaves = base_leaves(spec.base)
    set_exclusive(config, {key: value for key, value, _ in leaves if "." not in key})
    for key, value, path in leaves:
        set_path(config, key, value)
        prov.paths[key] = path
    return config, prov


def trial_name(axes: dict[str, Any]) -> str:
    """'model=convit_tiny,fraction=0.1,seed=0': the last part of each key unless two axes share it."""
    leaves = [k.split(".")[-1] for k in axes]
    parts = []
    for key, value in axes.items():
        label = key.split(".")[-1] if leaves.count(key.split(".")[-1]) == 1 else key
        parts.append(f"{label}={_fmt(value)}")
    return ",".join(parts)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def expand(spec: SweepSpec, *, whole_sweep_checks: bool = True) -> list[Trial]:
    """All trials of the sweep, in a stable order; raises :class:`SpecError` listing every problem.

    ``whole_sweep_checks=False`` reports only problems of single trials (used when the file already has
    structural problems, which would make "duplicate trials" or "no trials" misleading).
    """
    base, prov = resolve_base(spec)
    config_cls = trial_config_class()
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
            config = _validate(config_cls, raw)
        except ValueError as exc:
            issues += _validation_issues(exc, prov, point, name)
            continue
        trial = Trial(trial_id(config), name, config, dict(point.axes))
        trials.append(trial)
        paths_of[trial.id + str(len(trials))] = point.paths
    if not issues and whole_sweep_checks:
        issues += _duplicate_issues(spec, trials)
        if not trials:
            issues.append(spec.marks.issue(("exclude",) if spec.exclude else (), "the sweep has no trials"
                                           + (" left after the exclude rules" if spec.exclude else ""),
                                           key="exclude" if spec.exclude else ""))
    if issues:
        raise SpecError(issues)
    return trials


def _validate(config_cls: Any, raw: dict[str, Any]) -> Any:
    """The engine's validation; ``from_dict`` reports dotted key paths (model_kwargs included)."""
    from_dict = getattr(config_cls, "from_dict", None)
    return from_dict(raw) if callable(from_dict) else config_cls.model_validate(raw)


def _problems(exc: ValueError) -> list[tuple[str, str]]:
    """(dotted key, message) pairs from the engine's ConfigError or a pydantic ValidationError."""
    if isinstance(exc, ValidationError):
        out = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            if "input" in err and not isinstance(err["input"], (dict, list)) and err["type"] != "value_error":
                message += f" (got {err['input']!r})"
            out.append((".".join(str(p) for p in err["loc"]), message))
        return out
    issues = getattr(exc, "issues", None)
    if issues:
        return [(str(getattr(i, "path", "")), str(getattr(i, "message", i))) for i in issues]
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


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> tuple[SweepSpec, list[Trial]]:
    """Parse, validate and expand a sweep file, reporting the problems of all stages together."""
    text = read_spec_text(path)
    spec, issues = parse_spec_partial(text, str(path), overrides)
    trials: list[Trial] = []
    if spec is not None and not any(i.key == "base.preset" for i in issues):
        try:
            trials = expand(spec, whole_sweep_checks=not issues)
        except SpecError as exc:
            # a key already reported as unknown is reported again by the engine's validation: keep one
            unknown = {(i.file, i.line) for i in issues if "unknown" in i.message}
            issues += [i for i in exc.issues if (i.file, i.line) not in unknown or "unknown" not in i.message]
    if issues or spec is None:
        raise SpecError(issues)
    return spec, trials
