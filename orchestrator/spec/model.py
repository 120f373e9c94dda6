"""The sweep file's schema: :class:`SweepSpec` (structure, types and ranges of the sweep's own sections) and its
random axes. Trial keys inside ``base``, axes and variants are checked against the engine's schema by
:mod:`orchestrator.spec.checks`."""
from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, PositiveInt, PrivateAttr, field_validator, model_validator

from orchestrator.keys import DocPath, leaves
from orchestrator.sections import LocalSection, RaySection, Section, SlurmSection, TrackingSection
from orchestrator.spec.marks import Marks

SECTIONS = ("name", "description", "base", "variants", "grid", "zip", "seeds", "random", "exclude", "tracking",
            "local", "ray", "slurm")
AXIS_SECTIONS = ("base", "grid", "zip", "seeds", "random", "exclude")
SEED_KEY = "seed"
VARIANT_KEY = "variant"  # the axis of the named configurations of a ``variants:`` section
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
#: Trials one sweep may expand to, unless raised with ``submit --max-trials``: a typo (seeds=100000000, a
#: 10^8-point grid) fails in a second with a message instead of exhausting the machine.
MAX_TRIALS = 10_000


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



class SweepSpec(Section):
    """A validated sweep file. Axes are dotted trial keys (``model_kwargs.locality_strength``)."""

    name: str = Field(pattern=NAME_PATTERN, max_length=100)
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
        """``seeds: 3`` is shorthand for ``seeds: [0, 1, 2]`` (up to MAX_TRIALS: a sweep cannot run more)."""
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            if value > MAX_TRIALS:
                raise ValueError(f"{value:,} seeds is more than the {MAX_TRIALS:,} trials a sweep may have")
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

    def combinations(self) -> int:
        """How many points the axes span before exclusions (cheap: nothing is built)."""
        count = len(self.variant_names()) if self.variants else 1
        for key, values in self.grid.items():
            if not (key == VARIANT_KEY and self.variants):
                count *= len(values)
        for group in self.zip:
            count *= min((len(v) for v in group.values()), default=0)
        if self.random is not None:
            count *= self.random.samples
        if self.seeds is not None:
            count *= len(self.seeds)
        return count

    def resolved_text(self) -> str:
        """The file as written, plus the command-line overrides that applied to it (for the record)."""
        if not self._overrides:
            return self._text
        extra = "\n".join(f"#   {o}" for o in self._overrides)
        return f"{self._text.rstrip()}\n\n# command-line overrides:\n{extra}\n"



def base_leaves(base: dict[str, Any]) -> list[tuple[str, Any, DocPath]]:
    """Flatten ``base`` into (dotted trial key, value, document path); nested mappings merge into the preset."""
    return leaves(base, "base")


def variant_leaves(spec: SweepSpec, name: str) -> list[tuple[str, Any, DocPath]]:
    """A variant's settings as (dotted trial key, value, document path), nested mappings flattened."""
    return [(key, value, ("variants", name, *path[1:])) for key, value, path in base_leaves(spec.variants[name])]
