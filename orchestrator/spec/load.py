"""Loading a sweep file in three steps, each collecting every problem it finds instead of stopping at the first:

1. YAML → plain data plus :class:`~orchestrator.spec.marks.Marks` (file and line of every path);
2. ``key=value`` overrides from the command line (located at ``<command line>``);
3. the :class:`~orchestrator.spec.model.SweepSpec` model, then the checks against the engine's schema
   (:mod:`orchestrator.spec.checks`), then the expansion into trials, which validates every trial's full config.

All problems of all stages are reported together as one :class:`~orchestrator.errors.SpecError`.
"""
from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from orchestrator.errors import SpecError, SpecIssue
from orchestrator.keys import DocPath
from orchestrator.spec.checks import semantic_issues
from orchestrator.spec.expand import expand
from orchestrator.spec.marks import COMMAND_LINE, Marks, compose
from orchestrator.spec.model import AXIS_SECTIONS, SweepSpec
from orchestrator.spec.overrides import apply_overrides
from orchestrator.spec.trial_keys import check_trial_key, submodel
from orchestrator.text import did_you_mean, pydantic_message
from orchestrator.trial import Trial


def read_spec_text(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise SpecError([SpecIssue(str(path), None, "", f"cannot read the sweep file: {exc.strerror or exc}")])


def parse_spec(text: str, file: str = "<string>", overrides: Sequence[str] = ()) -> SweepSpec:
    spec, issues = parse_spec_partial(text, file, overrides)
    if issues or spec is None:
        raise SpecError(issues)
    return spec


def parse_spec_partial(text: str, file: str = "<string>",
                       overrides: Sequence[str] = ()) -> tuple[SweepSpec | None, list[SpecIssue]]:
    """Every problem found, plus a spec usable for expansion when the trial-defining sections are sound.

    When only a backend/tracking section or an unknown top-level key is wrong, the trials can still be expanded
    and checked, so the user sees every problem of the file at once instead of one batch per attempt.
    """
    data, marks, issues = compose(text, file)
    if issues and data is None:
        return None, issues
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, [SpecIssue(file, 1, "", "a sweep file is a mapping (name:, base:, grid:, ...)")]
    issues += apply_overrides(data, marks, overrides)
    _normalise(data, marks, file)
    spec, errors = _validate_document(data)
    issues += [_pydantic_issue(err, marks) for err in errors]
    if spec is None:
        broken = {err["loc"][0] for err in errors if err["loc"]}
        if broken & set(AXIS_SECTIONS):
            return None, issues
        usable = {k: v for k, v in data.items() if k not in broken}
        if "name" in broken:
            usable["name"] = "unnamed"
        spec, _ = _validate_document(usable)
        if spec is None:
            return None, issues
    spec._file, spec._text, spec._overrides, spec._marks = file, text, tuple(overrides), marks
    issues += semantic_issues(spec, marks)
    return spec, issues


def _validate_document(data: dict[str, Any]) -> tuple[SweepSpec | None, list[dict[str, Any]]]:
    try:
        return SweepSpec.model_validate(data), []
    except ValidationError as exc:
        return None, list(exc.errors())


def _normalise(data: dict[str, Any], marks: Marks, file: str) -> None:
    """Shorthands: ``base: cifar`` (a preset name), ``zip: {a: [..], b: [..]}`` (one group), a missing name."""
    if isinstance(data.get("base"), str):
        data["base"] = {"preset": data["base"]}
        marks.rebase(("base",), ("base", "preset"))
    elif data.get("base") is None and "base" in data:
        data["base"] = {}
    if isinstance(data.get("zip"), dict):
        data["zip"] = [data["zip"]]
        marks.rebase(("zip",), ("zip", 0))
    if "name" not in data and file not in ("<string>", COMMAND_LINE):
        data["name"] = Path(file).stem


def _pydantic_issue(err: dict[str, Any], marks: Marks) -> SpecIssue:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        return marks.issue(loc, f"unknown key '{loc[-1]}'{_section_suggestion(loc)}")
    if err["type"] == "missing":
        return marks.issue(loc, "required key is missing")
    message = pydantic_message(err)
    if loc[:1] == ("grid",) and err["type"] == "list_type":
        message = f"a grid axis is a list of values (got {err['input']!r}); a fixed value belongs in 'base'"
    return marks.issue(loc, message)


def _section_suggestion(loc: DocPath) -> str:
    """Did-you-mean for unknown keys inside the sweep's own sections (a trial key at the top level too)."""
    model: Any = SweepSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return ""
        ann = fields[part].annotation
        model = submodel(ann) or (submodel(typing.get_args(ann)[-1]) if typing.get_args(ann) else None)
        if model is None:
            return ""
    names = list(getattr(model, "model_fields", {}))
    hint = did_you_mean(str(loc[-1]), names)
    if hint:
        return hint
    if len(loc) == 1:
        if check_trial_key(str(loc[-1])) is None:
            return f"; trial settings go under 'base' (base: {{{loc[-1]}: ...}}) or an axis"
    return f"; known keys here: {', '.join(names)}"


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
