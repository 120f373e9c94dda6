"""Loading a sweep file in three steps, each collecting every problem it finds instead of stopping at the first:

1. YAML → plain data plus :class:`~orchestrator.spec.marks.Marks` (file and line of every path);
2. ``key=value`` overrides from the command line (located at ``<command line>``);
3. the :class:`~orchestrator.spec.model.SweepSpec` model, then the checks against the engine's schema
   (:mod:`orchestrator.spec.checks`), then the expansion into trials, which validates every trial's full config.

All problems of all stages are reported together as one :class:`~orchestrator.errors.SpecError`.
"""
from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from orchestrator.errors import SpecError, SpecIssue
from orchestrator.keys import DocPath
from orchestrator.spec.checks import semantic_issues
from orchestrator.spec.expand import expand
from orchestrator.spec.marks import COMMAND_LINE, Marks, compose
from orchestrator.spec.model import AXIS_SECTIONS, MAX_TRIALS, SweepSpec
from orchestrator.spec.overrides import apply_overrides
from orchestrator.spec.trial_keys import check_trial_key, submodel
from orchestrator.text import did_you_mean, pydantic_message
from orchestrator.trial import Trial


MAX_FILE_BYTES = 1 << 20  # a sweep file lists axes; 1 MiB is ~100 times the largest shipped one
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def read_spec_text(path: str | Path) -> str:
    """The sweep file as text: at most MAX_FILE_BYTES, UTF-8, no control characters; else one SpecError that
    says which and where (a binary, gzip or UTF-16 file, a NUL byte, /dev/zero)."""
    file = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError([SpecIssue(file, None, "", f"cannot read the sweep file: {exc.strerror or exc}")]) from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecError([SpecIssue(file, None, "", f"the file is larger than {MAX_FILE_BYTES >> 20} MiB; a sweep "
                                                   "file lists axes, not data")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SpecError([SpecIssue(file, line, "", f"not UTF-8 text (byte 0x{data[exc.start]:02x}); a sweep file "
                                                   "is a YAML text file saved as UTF-8")]) from None
    return text


def _text_issues(text: str, file: str) -> list[SpecIssue]:
    found = _CONTROL.search(text)
    if found:
        line = text.count("\n", 0, found.start()) + 1
        return [SpecIssue(file, line, "", f"control character U+{ord(found.group()):04X}; a sweep file is plain "
                                          "text")]
    return []


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
    text_issues = _text_issues(text, file)
    if text_issues:
        return None, text_issues
    data, marks, issues = compose(text, file)
    if issues and data is None:
        return None, issues
    if data is None:
        return None, [SpecIssue(file, 1, "", "the sweep file is empty; it needs at least a name and a base "
                                             "(see docs/sweeps.md)")]
    if not isinstance(data, dict):
        return None, [SpecIssue(file, 1, "", "a sweep file is a mapping (name:, base:, grid:, ...)")]
    if "base" not in data:
        issues.append(SpecIssue(file, 1, "base", "missing: every trial starts from it; name a preset (base: "
                                                 "cifar, or base: imagenet for the paper's recipe) or give trial "
                                                 "keys"))
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


def load_sweep(path: str | Path, overrides: Sequence[str] = (),
               max_trials: int = MAX_TRIALS) -> tuple[SweepSpec, list[Trial]]:
    """Parse, validate and expand a sweep file, reporting the problems of all stages together."""
    text = read_spec_text(path)
    spec, issues = parse_spec_partial(text, str(path), overrides)
    trials: list[Trial] = []
    if spec is not None and not any(i.key == "base.preset" for i in issues):
        try:
            trials = expand(spec, whole_sweep_checks=not issues, max_trials=max_trials)
        except SpecError as exc:
            # a key already reported as unknown is reported again by the engine's validation: keep one
            unknown = {(i.file, i.line) for i in issues if "unknown" in i.message}
            issues += [i for i in exc.issues if (i.file, i.line) not in unknown or "unknown" not in i.message]
    if issues or spec is None:
        raise SpecError(issues)
    return spec, trials
