"""Cluster profiles (``slurm/profiles/<name>.yaml``) and the checks that keep sweep values out of the shell.

A profile says how trials are placed on one cluster; a sweep's ``slurm:`` section names it (``profile: local``)
and overrides any of its keys. Profiles are resolved while the sweep file is validated, so a typo in a profile
name or key is reported with the sweep's file and line before anything is submitted, and the sweep folder
records the resolved values (a later edit of the profile does not change a submitted sweep).

Why the value checks: submitit writes most values into ``#SBATCH --key=value`` lines of a bash script. A newline
in a partition name would end the comment line and turn the rest into a shell command; quotes and ``$`` are
interpreted by sbatch's own option parser. Names are therefore limited to the characters SLURM itself allows in
them, and free-form ``setup`` lines (shell by design) must each be exactly one line.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError, field_validator,
                      model_validator)

from orchestrator.sections.base import Section
from orchestrator.text import did_you_mean, pydantic_problems

PROFILES_ENV = "CONVIT_SLURM_PROFILES"
REPO_PROFILES = Path(__file__).resolve().parents[2] / "slurm" / "profiles"

# partition/account/qos names: SLURM allows letters, digits and _ . - (a partition list is comma-separated).
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+(,[A-Za-z0-9_.\-]+)*$")
# node feature expressions: names joined by & | , * with [ ] ( ) ! and counts (*2), no blanks or quotes.
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.\-&|,*\[\]()!:]+$")
_PARAM_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
# option values: anything printable on one line except what sbatch's parser or bash would interpret.
_UNSAFE_VALUE = re.compile(r"[\x00-\x1f\x7f'\"`$\\;]")

#: sbatch options the backend sets itself (or that map to a section key): refused in additional_parameters.
RESERVED_PARAMETERS = {
    "array": "the backend builds the array from the sweep's trials",
    "output": "submitit places the logs in the sweep folder", "error": "submitit places the logs in the sweep folder",
    "open_mode": "submitit appends to its logs", "signal": "use slurm.signal_delay_s",
    "job_name": "the job is named after the sweep", "wrap": "the backend writes the batch script",
    "time": "use slurm.timeout_min", "nodes": "use slurm.nodes", "ntasks_per_node": "use slurm.tasks_per_node",
    "cpus_per_task": "use slurm.cpus_per_task", "gpus_per_node": "use slurm.gpus_per_node", "mem": "use slurm.mem_gb",
    "partition": "use slurm.partition", "account": "use slurm.account", "qos": "use slurm.qos",
    "constraint": "use slurm.constraint", "requeue": "the backend requeues through submitit",
    "no_requeue": "the backend requeues through submitit", "chdir": "jobs run from the submission folder",
}


# ------------------------------------------------------------------------------------------------ profiles
def profile_dirs() -> list[Path]:
    """Where named profiles are looked up: $CONVIT_SLURM_PROFILES (os.pathsep-separated), then the repo's."""
    extra = [Path(p).expanduser() for p in os.environ.get(PROFILES_ENV, "").split(os.pathsep) if p]
    return [*extra, REPO_PROFILES]


def available_profiles() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in profile_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


def find_profile(name: str) -> Path:
    """A profile by name (``local``) or by path (``./my-cluster.yaml``); ValueError says what exists."""
    if not name or "\n" in name:
        raise ValueError("profile must be a profile name or a path to a profile YAML file")
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ValueError(f"profile file {path} does not exist")
        return path
    known = available_profiles()
    if name in known:
        return known[name]
    hint = did_you_mean(name, known)
    where = ", ".join(str(d) for d in profile_dirs())
    listing = ", ".join(sorted(known)) or "none"
    raise ValueError(f"unknown cluster profile '{name}'{hint}; profiles: {listing} (looked in {where}; "
                     f"${PROFILES_ENV} adds folders)")


def load_profile(name: str, allowed: list[str]) -> dict[str, Any]:
    """The profile's mapping, its keys checked against ``allowed`` (the section's fields)."""
    path = find_profile(name)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cluster profile {path} cannot be read: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"cluster profile {path} is not a mapping of slurm keys")
    unknown = [k for k in data if k not in allowed]
    if unknown:
        key = str(unknown[0])
        hint = did_you_mean(key, allowed) or f"; known keys: {', '.join(allowed)}"
        raise ValueError(f"cluster profile {path}: unknown key '{key}'{hint}")
    return data


# ---------------------------------------------------------------------------------------- value checks
def check_name(value: str | None, key: str) -> str | None:
    if value is None:
        return None
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid SLURM {key} name (letters, digits, _ . -; a comma-separated "
                         "list for several)")
    return value


def check_constraint(value: str | None) -> str | None:
    if value is None:
        return None
    if not _CONSTRAINT.match(value):
        raise ValueError(f"{value!r} is not a SLURM node-feature expression (names with & | , * [ ] ( ) ! and no "
                         "blanks, quotes or shell characters)")
    return value


def check_setup(lines: list[str]) -> list[str]:
    """Setup lines are shell by design (module load, export, source); each must be a single line."""
    for i, line in enumerate(lines):
        if re.search(r"[\x00\n\r]", line):
            raise ValueError(f"setup line {i} contains a line break or NUL ({line!r}): give one shell line per "
                             "list item")
    return lines


def check_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """Extra sbatch options: safe option names, scalar one-line values, none that the backend sets itself."""
    for key, value in params.items():
        if not _PARAM_KEY.match(key):
            raise ValueError(f"{key!r} is not an sbatch option name (letters, digits, _ -, "
                             "without the leading --)")
        norm = key.replace("-", "_")
        if norm in RESERVED_PARAMETERS:
            raise ValueError(f"'{key}' cannot be set here: {RESERVED_PARAMETERS[norm]}")
        if isinstance(value, bool) or value is None:
            continue
        if not isinstance(value, (str, int, float)):
            raise ValueError(f"{key}: a value is a string, a number or true (got "
                             f"{type(value).__name__})")
        if isinstance(value, str) and (not value or _UNSAFE_VALUE.search(value)):
            raise ValueError(f"{key}: {value!r} is empty or contains a quote, a backslash, "
                             "$, ;, ` or a control character, which would break the batch script")
    return params


def sbatch_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """additional_parameters as submitit wants them: ``-`` in names (sbatch's spelling), false/null dropped."""
    return {k.replace("_", "-"): v for k, v in params.items() if v is not None and v is not False}


# ------------------------------------------------------------------------------------ the section's hooks
def merge_profile(section_cls: type[Section], data: Any) -> Any:
    """The sweep's ``slurm:`` mapping over its profile's. The profile is validated on its own first, so a bad
    value in it is reported against the profile file, not the sweep."""
    if not isinstance(data, dict):
        return data
    name = data.get("profile")
    if not isinstance(name, str):
        return data
    allowed = [f for f in section_cls.model_fields if f != "profile"]
    base = load_profile(name, allowed)
    try:
        section_cls.model_validate(base)
    except ValidationError as exc:
        detail = "; ".join(f"{loc or 'profile'}: {message}"
                           for loc, message in pydantic_problems(exc, with_input=False)) or str(exc)
        raise ValueError(f"cluster profile {find_profile(name)}: {detail}") from None
    return {**base, **data}


# ------------------------------------------------------------------------------------------ the section
class SlurmSection(Section):
    """SLURM through submitit: one job array per sweep, one array task per trial (docs/slurm.md).

    The keys are those of the cluster profiles in ``slurm/profiles/``. ``profile`` names one (or is a path to
    one); keys written here override it, and the defaults below fill what neither sets. The profile is read
    while the sweep file is validated, so the sweep folder records the resolved values.
    Names that end up in the batch script are checked here: a newline or a quote there would break it.
    """

    profile: str | None = None
    nodes: PositiveInt = 1
    gpus_per_node: NonNegativeInt = 0
    tasks_per_node: PositiveInt = 1
    cpus_per_task: PositiveInt = 1
    mem_gb: PositiveFloat | None = None
    timeout_min: PositiveInt = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: PositiveInt = 16
    signal_delay_s: PositiveInt = Field(120, description="USR2 this long before the time limit: checkpoint time")
    max_requeues: NonNegativeInt = Field(3, description="time-limit requeues per trial (preemptions always are)")
    setup: list[str] = Field(default_factory=list)
    additional_parameters: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> "SlurmSection":
        """Profile values were merged when the sweep was validated: the profile is not read again (a later edit
        of it does not change a submitted sweep), only its name is kept."""
        return cls.model_validate({**data, "profile": None}).model_copy(update={"profile": data.get("profile")})

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        return merge_profile(cls, data)

    @field_validator("partition", "account", "qos")
    @classmethod
    def _safe_name(cls, value: str | None, info: Any) -> str | None:
        return check_name(value, info.field_name)

    @field_validator("constraint")
    @classmethod
    def _safe_constraint(cls, value: str | None) -> str | None:
        return check_constraint(value)

    @field_validator("setup")
    @classmethod
    def _one_line_each(cls, value: list[str]) -> list[str]:
        return check_setup(value)

    @field_validator("additional_parameters")
    @classmethod
    def _safe_parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_parameters(value)

    @model_validator(mode="after")
    def _signal_before_limit(self) -> "SlurmSection":
        if self.signal_delay_s >= self.timeout_min * 60:
            raise ValueError(f"signal_delay_s ({self.signal_delay_s}) must be shorter than the time limit "
                             f"(timeout_min {self.timeout_min} = {self.timeout_min * 60} s)")
        return self
