"""Sweep files: load YAML (safe loader only), keep line numbers, validate everything before anything runs.

A sweep file is parsed in three steps, each collecting every problem it finds instead of stopping at the first:

1. YAML → plain Python data plus a :class:`Marks` table (path in the document → file and line), so a problem
   found later, even while validating an expanded trial, can still point at the line that caused it.
2. ``key=value`` overrides from the command line are applied to that data (they are located at ``<command line>``).
3. The document is validated by the :class:`SweepSpec` pydantic model (structure, types, ranges of the sweep's own
   sections), then by checks that need the engine's :class:`~convit.config.TrialConfig` schema (unknown trial keys
   with a "did you mean", axis conflicts, empty axes, zip lengths, exclude rules).

Values of trial keys are validated later by :func:`orchestrator.expand.expand`, which builds every trial's full
config and so can also report out-of-range values and duplicate trials.
"""
from __future__ import annotations

import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import yaml
from pydantic import BaseModel, Field, PositiveInt, PrivateAttr, ValidationError, field_validator, model_validator

from convit.config import exclusive_siblings
from orchestrator.errors import SpecError, SpecIssue
from orchestrator.sections import LocalSection, RaySection, Section, SlurmSection, TrackingSection

COMMAND_LINE = "<command line>"
SECTIONS = ("name", "description", "base", "variants", "grid", "zip", "seeds", "random", "exclude", "tracking",
            "local", "ray", "slurm")
SEED_KEY = "seed"
VARIANT_KEY = "variant"  # the axis of the named configurations of a ``variants:`` section
DocPath = tuple[str | int, ...]


# --------------------------------------------------------------------------------------------------- locations
@dataclass(frozen=True)
class Location:
    file: str
    line: int | None = None


class Marks:
    """Where each path of the document was written; lookups fall back to the nearest enclosing path."""

    def __init__(self, file: str):
        self.file = file
        self._at: dict[DocPath, Location] = {}

    def set(self, path: DocPath, loc: Location, overwrite: bool = False) -> None:
        if overwrite or path not in self._at:
            self._at[path] = loc

    def locate(self, path: DocPath) -> Location:
        for n in range(len(path), -1, -1):
            if path[:n] in self._at:
                return self._at[path[:n]]
        return Location(self.file, None)

    def rebase(self, old: DocPath, new: DocPath) -> None:
        """Record the paths under ``old`` again under ``new`` (when a shorthand form is normalised)."""
        for path, loc in list(self._at.items()):
            if path[: len(old)] == old:
                self._at.setdefault(new + path[len(old):], loc)

    def issue(self, path: DocPath, message: str, key: str | None = None) -> SpecIssue:
        loc = self.locate(path)
        return SpecIssue(loc.file, loc.line, display_key(path) if key is None else key, message)


def display_key(path: Iterable[str | int]) -> str:
    """('grid', 'lr', 2) → 'grid.lr[2]' — how a path is shown to the user."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --------------------------------------------------------------------------------------------------------- YAML
class _Loader(yaml.SafeLoader):
    """The safe loader; only used to compose nodes and construct scalars, so nothing can execute code."""


def _compose(text: str, file: str) -> tuple[Any, Marks, list[SpecIssue]]:
    marks, issues = Marks(file), []
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = _to_python(node, loader, (), marks, issues) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        context = ""
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            context = f" ({exc.context} started on line {exc.context_mark.line + 1})"
        return None, marks, [SpecIssue(file, line, "", f"invalid YAML: {exc.problem or exc}{context}")]
    except yaml.YAMLError as exc:
        return None, marks, [SpecIssue(file, None, "", f"invalid YAML: {exc}")]
    finally:
        loader.dispose()
    return data, marks, issues


def _to_python(node: yaml.Node, loader: _Loader, path: DocPath, marks: Marks, issues: list[SpecIssue]) -> Any:
    marks.set(path, Location(marks.file, node.start_mark.line + 1))
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                issues.append(SpecIssue(marks.file, line, str(key), "keys must be text; quote it"))
                key = str(key)
            if key in out:
                first = marks.locate(path + (key,)).line
                issues.append(SpecIssue(marks.file, line, display_key(path + (key,)),
                                        f"duplicate key (first given on line {first}); keep one"))
            marks.set(path + (key,), Location(marks.file, line))
            out[key] = _to_python(value_node, loader, path + (key,), marks, issues)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, loader, path + (i,), marks, issues) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


# ---------------------------------------------------------------------------------------------------- the model
class RandomAxis(Section):
    """One randomly sampled axis. ``randint`` draws from [low, high) like Ray Tune's ``randint``."""

    distribution: Literal["uniform", "loguniform", "randint", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> "RandomAxis":
        if self.distribution == "choice":
            if not self.values:
                raise ValueError("'choice' needs a non-empty 'values' list")
            if self.low is not None or self.high is not None:
                raise ValueError("'choice' takes 'values', not 'low'/'high'")
            return self
        if self.values is not None:
            raise ValueError(f"'{self.distribution}' takes 'low' and 'high', not 'values'")
        if self.low is None or self.high is None:
            raise ValueError(f"'{self.distribution}' needs both 'low' and 'high'")
        if not self.low < self.high:
            raise ValueError(f"'low' ({self.low:g}) must be smaller than 'high' ({self.high:g})")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError("'loguniform' needs 'low' > 0")
        if self.distribution == "randint" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError("'randint' needs integer 'low' and 'high'")
        return self

    def sample(self, rng: Any) -> Any:
        if self.distribution == "choice":
            return rng.choice(self.values)
        assert self.low is not None and self.high is not None
        if self.distribution == "uniform":
            return rng.uniform(self.low, self.high)
        if self.distribution == "loguniform":
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.randrange(int(self.low), int(self.high))


class RandomSection(Section):
    """``samples`` random points, each crossed with the grid, zip groups and seeds; seeded so expansion is stable."""

    samples: PositiveInt
    seed: int = 0
    axes: dict[str, RandomAxis]


_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class SweepSpec(Section):
    """A validated sweep file. Axes are dotted trial keys (``model_kwargs.locality_strength``)."""

    name: str = Field(pattern=_NAME_PATTERN, max_length=100)
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: list[dict[str, list[Any]]] = Field(default_factory=list)
    seeds: list[int] | None = None
    random: RandomSection | None = None
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    local: LocalSection = Field(default_factory=LocalSection)
    ray: RaySection = Field(default_factory=RaySection)
    slurm: SlurmSection = Field(default_factory=SlurmSection)

    _file: str = PrivateAttr("<string>")
    _text: str = PrivateAttr("")
    _overrides: tuple[str, ...] = PrivateAttr(())
    _marks: Marks = PrivateAttr(default_factory=lambda: Marks("<string>"))

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, value: Any) -> Any:
        """``seeds: 3`` is shorthand for ``seeds: [0, 1, 2]``."""
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return list(range(value))
        return value

    # -- source information kept for error messages, the MLflow artifact and the working folder
    @property
    def file(self) -> str:
        return self._file

    @property
    def text(self) -> str:
        return self._text

    @property
    def overrides(self) -> tuple[str, ...]:
        return self._overrides

    @property
    def marks(self) -> Marks:
        return self._marks

    @property
    def preset(self) -> str | None:
        return self.base.get("preset")

    def variant_names(self) -> list[str]:
        """The variants this sweep runs: all of ``variants`` in file order, or those ``grid.variant`` selects."""
        return list(self.grid.get(VARIANT_KEY) or self.variants) if self.variants else []

    def axis_keys(self) -> list[str]:
        """Every swept key, in the order written: ``variant`` (when named variants exist), grid, zip, random,
        then ``seed``."""
        keys = [VARIANT_KEY] if self.variants and VARIANT_KEY not in self.grid else []
        keys += list(self.grid)
        for group in self.zip:
            keys += list(group)
        if self.random:
            keys += list(self.random.axes)
        if self.seeds is not None:
            keys.append(SEED_KEY)
        return keys

    def resolved_text(self) -> str:
        """The file as written, plus the command-line overrides that applied to it (for the record)."""
        if not self._overrides:
            return self._text
        extra = "\n".join(f"#   {o}" for o in self._overrides)
        return f"{self._text.rstrip()}\n\n# command-line overrides:\n{extra}\n"


# ------------------------------------------------------------------------------------------ trial key schema
def trial_config_class() -> type[BaseModel]:
    """The engine's TrialConfig, imported late so the orchestrator imports without the ML stack."""
    from convit.config import TrialConfig

    return TrialConfig


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _submodel(arg)
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
    model = model or trial_config_class()
    keys = []
    for name, annotation in _fields(model).items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        sub = _submodel(annotation)
        if sub is not None:
            keys += known_trial_keys(sub, dotted + ".")
    return keys


def check_trial_key(key: str) -> str | None:
    """None if ``key`` names a trial setting, else a message saying what is wrong and what was probably meant."""
    model: type[BaseModel] = trial_config_class()
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = _fields(model)
        if part not in fields:
            return f"unknown trial key '{key}'{_suggest(key, parts, i, fields)}"
        annotation = fields[part]
        sub = _submodel(annotation)
        if sub is not None:
            model = sub
            continue
        if i < len(parts) - 1 and not _is_mapping(annotation):
            return f"'{'.'.join(parts[:i + 1])}' is a single value; it has no key '{parts[i + 1]}'"
        return None
    return None


def _suggest(key: str, parts: list[str], i: int, fields: dict[str, Any]) -> str:
    prefix = ".".join(parts[:i])
    local = difflib.get_close_matches(parts[i], list(fields), n=2, cutoff=0.6)
    if local:  # two when both are close ('fraction': data_fraction or val_fraction)
        named = [f"'{'.'.join([*parts[:i], k, *parts[i + 1:]])}'" for k in local]
        return f" (did you mean {' or '.join(named)}?)"
    everything = known_trial_keys()
    same_leaf = [k for k in everything if k.split(".")[-1] == parts[-1] and k != key]
    close = same_leaf or difflib.get_close_matches(key, everything, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    where = f"under '{prefix}'" if prefix else "at the top level"
    return f"; known keys {where}: {', '.join(sorted(fields))}"


# ----------------------------------------------------------------------------------------------------- overrides
def parse_override(text: str) -> tuple[str, Any]:
    """'model_kwargs.locality_strength=0.1' → ('model_kwargs.locality_strength', 0.1); values are YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"'{text}' is not key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ValueError(f"the value of '{key}' is not valid YAML: {exc}") from exc
    return key.strip(), value


def _apply_overrides(doc: dict[str, Any], marks: Marks, overrides: Sequence[str]) -> list[SpecIssue]:
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
            if not _set_nested(doc, list(path), value):
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


def _set_nested(doc: dict[str, Any], parts: list[str], value: Any) -> bool:
    node = doc
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            return False
        node = nxt
    node[parts[-1]] = value
    return True


# ------------------------------------------------------------------------------------------------------ loading
def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read and validate a sweep file; raises :class:`SpecError` listing every problem found."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([SpecIssue(str(path), None, "", f"cannot read the sweep file: {exc.strerror or exc}")])
    return parse_spec(text, str(path), overrides)


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


AXIS_SECTIONS = ("base", "grid", "zip", "seeds", "random", "exclude")


def parse_spec_partial(text: str, file: str = "<string>",
                       overrides: Sequence[str] = ()) -> tuple[SweepSpec | None, list[SpecIssue]]:
    """Every problem found, plus a spec usable for expansion when the trial-defining sections are sound.

    When only a backend/tracking section or an unknown top-level key is wrong, the trials can still be expanded
    and checked, so the user sees every problem of the file at once instead of one batch per attempt.
    """
    data, marks, issues = _compose(text, file)
    if issues and data is None:
        return None, issues
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, [SpecIssue(file, 1, "", "a sweep file is a mapping (name:, base:, grid:, ...)")]
    issues += _apply_overrides(data, marks, overrides)
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
    issues += _semantic_issues(spec, marks)
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
    message = err["msg"].removeprefix("Value error, ")
    if "input" in err and err["type"] != "value_error" and not isinstance(err["input"], (dict, list)):
        message += f" (got {err['input']!r})"
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
        model = _submodel(ann) or (_submodel(typing.get_args(ann)[-1]) if typing.get_args(ann) else None)
        if model is None:
            return ""
    names = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if len(loc) == 1:
        try:
            if check_trial_key(str(loc[-1])) is None:
                return f"; trial settings go under 'base' (base: {{{loc[-1]}: ...}}) or an axis"
        except ImportError:
            pass
    return f"; known keys here: {', '.join(names)}"


# ------------------------------------------------------------------------------------------- semantic checks
def _semantic_issues(spec: SweepSpec, marks: Marks) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    issues += _base_key_issues(spec, marks)
    issues += _axis_issues(spec, marks)
    issues += _variant_issues(spec, marks)
    issues += _exclude_issues(spec, marks)
    return issues


def base_leaves(base: dict[str, Any], path: DocPath = ()) -> list[tuple[str, Any, DocPath]]:
    """Flatten ``base`` into (dotted trial key, value, document path); nested mappings merge into the preset."""
    out = []
    for key, value in base.items():
        if not path and key == "preset":
            continue
        if isinstance(value, dict) and value:
            out += [(f"{key}.{k}", v, p) for k, v, p in base_leaves(value, path + (key,))]
        else:
            out.append((key, value, ("base", *path, key)))
    return out


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
    config = trial_config_class()
    try:
        config.preset(name)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - the engine decides how an unknown preset fails
        names = _preset_names(config)
        hint = f" (did you mean '{difflib.get_close_matches(name, names, n=1)[0]}'?)" if difflib.get_close_matches(
            name, names, n=1) else (f"; presets: {', '.join(names)}" if names else f": {exc}")
        return f"unknown preset '{name}'{hint}"
    return None


def _preset_names(config: Any) -> list[str]:
    for attr in ("preset_names", "list_presets", "presets"):
        found = getattr(config, attr, None)
        try:
            names = found() if callable(found) else found
        except Exception:  # noqa: BLE001
            continue
        if names:
            return sorted(names)
    return ["imagenet", "cifar", "smoke"]


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
            close = difflib.get_close_matches(str(name), list(spec.variants), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            issues.append(marks.issue(("grid", VARIANT_KEY, i), f"no variant named '{name}'{hint}; variants: "
                                                                f"{', '.join(spec.variants)}", key="grid.variant"))
    return issues


def variant_leaves(spec: SweepSpec, name: str) -> list[tuple[str, Any, DocPath]]:
    """A variant's settings as (dotted trial key, value, document path), nested mappings flattened."""
    return [(key, value, ("variants", name, *path[1:])) for key, value, path in base_leaves(spec.variants[name])]


def _variant_issues(spec: SweepSpec, marks: Marks) -> list[SpecIssue]:
    import re

    issues = []
    for name, settings in spec.variants.items():
        if not re.match(_NAME_PATTERN, name):
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
                close = difflib.get_close_matches(key, axes, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else f"; axes: {', '.join(axes) or 'none'}"
                issues.append(marks.issue(("exclude", r, key), f"'{key}' is not a sweep axis{hint}"))
    return issues


@dataclass
class Provenance:
    """Where each trial key's value came from, for errors found while validating expanded trials."""

    marks: Marks
    paths: dict[str, DocPath] = field(default_factory=dict)

    def locate(self, key: str) -> tuple[Location, str]:
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            prefix = ".".join(parts[:n])
            if prefix in self.paths:
                return self.marks.locate(self.paths[prefix]), prefix
        below = [k for k in self.paths if k.startswith(key + ".")] if key else []
        if below:
            return self.marks.locate(self.paths[below[-1]]), below[-1]
        return self.marks.locate(("base",)), key
