"""The trial configuration: every knob of one training run, validated once and passed down.

`TrialConfig` is the single source of truth that the sweep orchestrator expands, the engine consumes
and the checkpoint pins (through `config_hash()`).  Defaults are the paper's ImageNet recipe (DeiT's
training recipe, see docs/training.md); `TrialConfig.preset("cifar" | "smoke" | "imagenet")` gives the
named starting points.

Derived values (the linearly scaled learning rate, the AMP dtype) are computed by `resolve()` from the
immutable config and never written back into it, so they are applied exactly once, however many times a
trial is resumed.  The training budget (optimizer steps, epochs, warm-up steps) also depends on the size
of the training subset, so it is planned by `convit.data.budget.plan_budget` once the data is known.

The training budget is stated in exactly one unit: ``epochs`` (passes over the training subset),
``train_images`` (samples seen, repeats included) or ``train_steps`` (optimizer steps); the warm-up in
``warmup_epochs``, ``warmup_steps`` or ``warmup_fraction`` (of the budget).  These keys form exclusive
groups (`EXCLUSIVE_GROUPS`): setting one at a more specific level (a sweep's grid over its base, the base
over a preset) replaces the others of its group; setting two at the same level is an error.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .catalog import CONVIT_MODELS, DEIT_MODELS, VARIANTS, default_local_layers
from .presets import PRESETS
from .text import did_you_mean, pydantic_message

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "DATASETS",
    "MODEL_NAMES",
    "NormStats",
    "PRESETS",
    "ResolvedTrial",
    "TrialConfig",
    "apply_overrides",
    "load_config",
]

MODEL_NAMES: tuple[str, ...] = CONVIT_MODELS + DEIT_MODELS

#: Fields that cannot change a trial's results; they are left out of `config_hash()` so that moving the
#: data, changing loader workers (sample augmentation is seeded per sample, not per worker) or the
#: checkpoint cadence neither breaks resume nor splits one trial into two.
NON_RESULT_FIELDS: frozenset[str] = frozenset({"data_root", "download", "num_workers", "checkpoint_every"})
#: Keys added after trials were first run, with their default: left out of the hash at that default, so a trial
#: id (and a submitted sweep's resumability) does not change when the code gains a key that changes nothing.
LATER_FIELDS: dict[str, Any] = {"init_checkpoint": None, "image_column": "image", "label_column": "label",
                                "norm_stats": "dataset"}

#: The ``dataset`` names (convit.data.sources says where each reads from) and the class count of the named ones.
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "mnist", "fashion_mnist", "kmnist", "svhn", "stl10",
                             "imagefolder", "hf", "synthetic")
DATASET_CLASSES: dict[str, int] = {"cifar10": 10, "cifar100": 100, "mnist": 10, "fashion_mnist": 10, "kmnist": 10,
                                   "svhn": 10, "stl10": 10}

#: Keys of which exactly one states a quantity (the budget; the warm-up); see the module docstring.
BUDGET_KEYS: tuple[str, ...] = ("epochs", "train_images", "train_steps")
WARMUP_KEYS: tuple[str, ...] = ("warmup_epochs", "warmup_steps", "warmup_fraction")
EXCLUSIVE_GROUPS: tuple[tuple[str, ...], ...] = (BUDGET_KEYS, WARMUP_KEYS)


def exclusive_siblings(key: str) -> tuple[str, ...]:
    """The other keys of ``key``'s exclusive group (empty for ordinary keys)."""
    for group in EXCLUSIVE_GROUPS:
        if key in group:
            return tuple(k for k in group if k != key)
    return ()


def set_exclusive(config: dict[str, Any], layer: Mapping[str, Any]) -> None:
    """Merge one level's top-level ``layer`` into ``config``: a group key set to a value clears the
    group's other keys unless the same level sets them too (then validation reports both)."""
    for key, value in layer.items():
        if value is None:
            continue
        for sibling in exclusive_siblings(key):
            if sibling not in layer:
                config[sibling] = None


# --------------------------------------------------------------------------------------------- errors
@dataclass(frozen=True)
class ConfigIssue:
    """One problem, located by its dotted key path (e.g. ``model_kwargs.locality_strength``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(ValueError):
    """A trial config is invalid.  ``issues`` lists every problem with its key path.

    Callers that know where the config came from (a sweep file, a CLI argument) map ``issue.path`` to
    their own location (file and line) and print ``str(issue)``.
    """

    def __init__(self, issues: Sequence[ConfigIssue]):
        self.issues = list(issues)
        super().__init__("invalid trial config:\n" + "\n".join(f"  {i}" for i in self.issues))


def _one_of(value: str, choices: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``choices``; else a ValueError with the closest name and the list."""
    if value not in choices:
        raise ValueError(f"unknown {what} '{value}'{did_you_mean(value, choices)}; choose from {list(choices)}")
    return value


def _issues_from_validation(err: ValidationError, known: Mapping[str, Sequence[str]]) -> list[ConfigIssue]:
    """Turn pydantic's errors into dotted key paths with a human message (convit.text; 'did you mean' for an
    unknown key)."""
    issues = []
    for e in err.errors():
        inner = e.get("ctx", {}).get("error")
        if isinstance(inner, ConfigError):  # raised by a nested check that already knows its key paths
            issues.extend(inner.issues)
            continue
        loc = [str(p) for p in e["loc"]]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key{did_you_mean(loc[-1], known.get('.'.join(loc[:-1]), ()))}"
        else:
            msg = pydantic_message(e)
        issues.append(ConfigIssue(".".join(loc), msg))
    return issues


# ------------------------------------------------------------------------------------- model kwargs
class _NumbersAreNumbers(BaseModel):
    """Numbers must be finite numbers: NaN and infinity are refused (``lr: .inf`` means nothing), and so is
    true/false where a number is meant (pydantic would read ``epochs: true`` as 1)."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if not _admits_bool(annotation):
                raise ValueError(f"a number or a name is expected, not {str(value).lower()}")
        return value


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    return any(_admits_bool(a) for a in typing.get_args(annotation))


class _SharedModelKwargs(_NumbersAreNumbers):
    """Keyword arguments every model accepts (timm's names).  None of them may be None: leave a key out
    to get the model's default."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    img_size: int = Field(224, ge=8, description="default: the dataset's native size (convit.data)")
    patch_size: int = Field(16, ge=1)
    in_chans: Literal[1, 3] = Field(3, description="default: the dataset's channels; 3 on grayscale data "
                                    "repeats the channel")
    depth: int = Field(12, ge=1, le=48, description="number of transformer blocks")
    num_heads: int = Field(4, ge=1, le=64, description="attention heads per block (default: the variant's)")
    embed_dim: int = Field(192, ge=1, le=4096, description="total width (heads x per-head dim; default: the variant's)")
    mlp_ratio: float = Field(4.0, gt=0.0, le=16.0)
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    attn_drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _grid(self) -> "_SharedModelKwargs":
        # without an explicit img_size the dataset's native size is used: convit.data checks that grid
        if "img_size" in self.model_fields_set and self.img_size % self.patch_size:
            raise ValueError(
                f"img_size ({self.img_size}) must be a multiple of patch_size ({self.patch_size})"
            )
        return self


class NormStats(BaseModel):
    """Explicit input normalisation, one value per channel, in [0, 1] pixel units (what torchvision's
    Normalize takes after ToTensor)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mean: list[float] = Field(min_length=1, max_length=3)
    std: list[float] = Field(min_length=1, max_length=3)

    @model_validator(mode="after")
    def _same_length(self) -> "NormStats":
        if len(self.mean) != len(self.std) or len(self.mean) == 2:
            raise ValueError("mean and std need one value per channel each (1 or 3 values)")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        return self


class _ConvitModelKwargs(_SharedModelKwargs):
    """ConViT's own knobs (GPSA): see convit/models."""

    locality_strength: float = Field(1.0, ge=0.0, allow_inf_nan=False)
    local_up_to_layer: int = Field(10, ge=0, le=48)
    gating_init: float = Field(1.0, allow_inf_nan=False)
    freeze_gating: bool = False
    use_local_init: bool = True
    freeze_gpsa: bool = False


_RESERVED_MODEL_KWARGS = {
    "num_classes": "is set from the dataset; use the top-level 'num_classes' to keep the first N classes",
}


#: Model arguments whose default is the dataset's (convit.data.data_geometry): null states that default.
DATA_DEFAULTED_KWARGS = ("img_size", "in_chans")


def _model_kwargs_schema(model: str) -> type[_SharedModelKwargs]:
    return _ConvitModelKwargs if model in CONVIT_MODELS else _SharedModelKwargs


def _validate_model_kwargs(model: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Check keys and types against the model family; return only the given keys, coerced. ``img_size: null`` and
    ``in_chans: null`` drop the key (the dataset's native size and channels), e.g. to undo a preset's 32 px."""
    kwargs = {k: v for k, v in kwargs.items() if not (k in DATA_DEFAULTED_KWARGS and v is None)}
    schema = _model_kwargs_schema(model)
    issues = []
    for key in kwargs:
        if key in _RESERVED_MODEL_KWARGS:
            issues.append(ConfigIssue(f"model_kwargs.{key}", _RESERVED_MODEL_KWARGS[key]))
        elif key not in schema.model_fields:
            if key in _ConvitModelKwargs.model_fields:
                msg = f"applies to ConViT models only, not to '{model}'"
            else:
                msg = "unknown model argument" + did_you_mean(key, list(_ConvitModelKwargs.model_fields))
            issues.append(ConfigIssue(f"model_kwargs.{key}", msg))
    if issues:
        raise ConfigError(issues)
    try:
        full = schema.model_validate(dict(kwargs))
    except ValidationError as err:
        raise ConfigError(
            [ConfigIssue(f"model_kwargs.{i.path}" if i.path else "model_kwargs", i.message)
             for i in _issues_from_validation(err, {})]
        ) from None
    given = {k: getattr(full, k) for k in kwargs}
    _check_architecture(model, given)
    return given


def _check_architecture(model: str, given: Mapping[str, Any]) -> None:
    """Cross-checks of the architecture knobs against the variant's defaults (convit.catalog)."""
    variant = VARIANTS[model]
    depth = given.get("depth", variant.depth)
    heads = given.get("num_heads", variant.num_heads)
    width = given.get("embed_dim", heads * variant.head_dim if "num_heads" in given else variant.embed_dim)
    issues = []
    if width % heads:
        key = "embed_dim" if "embed_dim" in given else "num_heads"
        issues.append(ConfigIssue(f"model_kwargs.{key}", f"embed_dim ({width}) must be a multiple of num_heads "
                                                         f"({heads})"))
    if variant.family == "convit":
        local = given.get("local_up_to_layer", variant.local_up_to_layer if "depth" not in given
                          else default_local_layers(depth))
        if local > depth:
            issues.append(ConfigIssue("model_kwargs.local_up_to_layer",
                                      f"{local} GPSA layers but the model has depth {depth}"))
        if local > 0 and given.get("use_local_init", True) and math.isqrt(heads) ** 2 != heads:
            issues.append(ConfigIssue("model_kwargs.num_heads" if "num_heads" in given else "model_kwargs",
                                      f"the local (convolutional) init places heads on a square grid: num_heads "
                                      f"must be a perfect square (1, 4, 9, 16, ...), got {heads}; or set "
                                      "use_local_init: false"))
    if issues:
        raise ConfigError(issues)


# ------------------------------------------------------------------------------------- trial config
class TrialConfig(_NumbersAreNumbers):
    """Every knob of one training run.  Defaults = the paper's ImageNet recipe (DeiT's).

    ``batch_size`` is the GLOBAL batch (all processes together); ``lr`` is the base learning rate for a
    batch of ``lr_base_batch`` images and is scaled linearly (lr × batch_size / lr_base_batch) by
    `resolve()`, once.  Epoch-valued knobs count passes over the training subset.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), frozen=True, allow_inf_nan=False)

    # model
    model: str = Field("convit_small", description="one of convit.list_models()")
    model_kwargs: dict[str, Any] = Field(
        default_factory=lambda: {"drop_path_rate": 0.1},
        description="passed to convit.create_model (img_size, patch_size, drop_path_rate, locality_strength, "
        "local_up_to_layer, gating_init, freeze_gating, use_local_init, drop_rate, attn_drop_rate)",
    )
    init_checkpoint: str | None = Field(
        None, description="weights the trial starts from (fresh start only; a resumed trial loads its own "
        "checkpoint): a timm-format ConViT/DeiT state dict or one of our checkpoints; head re-initialised, "
        "position and patch embeddings resampled to the model's grid, the rest loaded strictly "
        "(convit.models.finetune)")

    # data
    dataset: str = Field("imagefolder", description="one of " + ", ".join(DATASETS) + " (convit.data.sources)")
    data_root: str | None = Field(None, description="dataset folder; default: env CONVIT_DATA_ROOT")
    download: bool = Field(False, description="named datasets: fetch the files with torchvision's downloader "
                           "into data_root when they are missing (needs network)")
    image_column: str = Field("image", min_length=1, description="hf only: the column holding the images")
    label_column: str = Field("label", min_length=1, description="hf only: the column holding the class labels")
    norm_stats: Literal["dataset", "imagenet"] | NormStats = Field(
        "dataset", description="input normalisation: 'dataset' (published values for the named datasets, else "
        "computed from the training images and cached), 'imagenet' (timm's ImageNet values, e.g. to fine-tune "
        "ImageNet weights), or {mean: [...], std: [...]} with one value per channel")
    data_fraction: float = Field(1.0, gt=0.0, le=1.0, description="stratified, seeded, nested subset")
    num_classes: int | None = Field(None, ge=2, description="keep the first N classes (sorted); synthetic: N")
    synthetic_train_size: int = Field(256, ge=1, le=10_000_000, description="synthetic dataset only")
    synthetic_val_size: int = Field(64, ge=1, le=10_000_000, description="synthetic dataset only")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="numpy's seeds are 32-bit")

    # data split
    val_fraction: float = Field(0.1, gt=0.0, le=0.5, description="share of each class of the training data "
                                "held out as the validation split (stratified, seeded by 'seed'); every "
                                "in-training decision uses it, the test split is evaluated at the end")
    test_every_eval: bool = Field(False, description="also evaluate the test split at every evaluation "
                                  "(logged as test_*; no scheduler or checkpoint choice may use it)")

    # schedule: the budget in exactly one unit (see the module docstring)
    epochs: int | None = Field(300, ge=1, le=1_000_000, description="passes over the training subset")
    train_images: int | None = Field(None, ge=1, le=10**13, description="samples seen in training, repeats "
                                     "included: steps = ceil(train_images / batch_size), the same at every f")
    train_steps: int | None = Field(None, ge=1, le=10**9, description="optimizer steps")
    batch_size: int = Field(1024, ge=1, le=1 << 20, description="global batch over all processes")
    lr: float = Field(5e-4, gt=0.0, description="base lr for lr_base_batch images")
    lr_base_batch: int | None = Field(512, ge=1, description="linear scaling reference; null = no scaling")
    opt: str = "adamw"
    opt_eps: float = Field(1e-8, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0)
    warmup_epochs: float | None = Field(5.0, ge=0.0, allow_inf_nan=False, description="linear warm-up, in "
                                        "epochs of the training subset")
    warmup_steps: int | None = Field(None, ge=0, description="linear warm-up, in optimizer steps")
    warmup_fraction: float | None = Field(None, ge=0.0, lt=1.0, description="linear warm-up, as a share of "
                                          "the budget's optimizer steps")
    warmup_lr: float = Field(1e-6, ge=0.0)
    min_lr: float = Field(1e-5, ge=0.0)
    clip_grad: float | None = Field(None, gt=0.0, description="max global grad norm; null = off")

    # regularisation and augmentation
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    mixup: float = Field(0.8, ge=0.0, description="mixup alpha; 0 = off")
    cutmix: float = Field(1.0, ge=0.0, description="cutmix alpha; 0 = off")
    mixup_prob: float = Field(1.0, ge=0.0, le=1.0)
    mixup_switch_prob: float = Field(0.5, ge=0.0, le=1.0)
    mixup_mode: Literal["batch", "pair", "elem"] = "batch"
    randaugment: str | None = Field("rand-m9-mstd0.5-inc1", description="timm auto_augment string; null = off")
    color_jitter: float = Field(0.4, ge=0.0, description="used only when randaugment is off")
    train_interpolation: Literal["bicubic", "bilinear", "random"] = "bicubic"
    crop_scale: tuple[float, float] = Field((0.08, 1.0), description="RandomResizedCrop area range")
    crop_pct: float = Field(0.875, gt=0.0, le=1.0, description="eval centre-crop fraction")
    hflip: float = Field(0.5, ge=0.0, le=1.0)
    reprob: float = Field(0.25, ge=0.0, le=1.0, description="random erasing probability")
    remode: Literal["pixel", "rand", "const"] = "pixel"
    recount: int = Field(1, ge=1)
    no_aug: bool = Field(False, description="no train augmentation at all (debugging, DDP equivalence)")
    repeated_aug: int = Field(3, ge=1, le=64, description="repeats per image per epoch (DeiT's RA); 1 = off")
    repeated_aug_budget: Literal["cover", "deit"] = Field(
        "deit",
        description="cover: every epoch shows each subset image repeated_aug times; "
        "deit: every epoch shows len(subset) samples, r consecutive epochs cover the subset",
    )
    ema: bool = False
    ema_decay: float = Field(0.99996, gt=0.0, lt=1.0)

    # execution
    amp: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    compile: bool = False
    num_workers: int = Field(8, ge=0, le=256)
    eval_every: int = Field(1, ge=0, description="evaluate the validation split every N epochs; 0 = only "
                            "after the last epoch (always evaluated)")
    analysis_every: int = Field(10, ge=0, description="attention metrics every N epochs (and after the last); "
                                "0 = off")
    checkpoint_every: int = Field(1, ge=1, description="checkpoint every N epochs (and at the last)")

    # ------------------------------------------------------------------------------ validators
    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return _one_of(v, MODEL_NAMES, "model")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        return _one_of(v, DATASETS, "dataset")

    @field_validator("init_checkpoint")
    @classmethod
    def _checkpoint_path(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("an empty path: give the checkpoint file, or null to start from random weights")
        return v

    @field_validator("crop_scale")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < v[0] <= v[1] <= 1.0:
            raise ValueError("crop_scale must satisfy 0 < low <= high <= 1")
        return v

    @field_validator("randaugment")
    @classmethod
    def _rand_string(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("rand", "augmix", "trivial")):
            raise ValueError("expected a timm auto_augment string like 'rand-m9-mstd0.5-inc1' (or null)")
        return v

    @field_validator("model_kwargs")
    @classmethod
    def _kwargs_for_model(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # The accepted keys depend on the model family; a ConfigError here keeps its 'model_kwargs.<key>'
        # paths (unpacked again in _issues_from_validation).  An invalid model name is reported on its own.
        return _validate_model_kwargs(info.data.get("model", CONVIT_MODELS[0]), v)

    @model_validator(mode="after")
    def _cross_checks(self) -> "TrialConfig":
        issues = []
        known = DATASET_CLASSES.get(self.dataset)
        if known is not None and self.num_classes is not None and self.num_classes > known:
            issues.append(ConfigIssue("num_classes", f"{self.dataset} has {known} classes"))
        for group in EXCLUSIVE_GROUPS:
            chosen = [k for k in group if getattr(self, k) is not None]
            if len(chosen) > 1:
                issues.append(ConfigIssue(chosen[-1], f"set only one of {', '.join(group)} (got "
                                                      f"{' and '.join(chosen)}); set the others to null"))
            elif not chosen and group is BUDGET_KEYS:
                issues.append(ConfigIssue("epochs", "no training budget: set one of " + ", ".join(group)))
        if self.epochs is None and self.warmup_epochs:  # epochs of the subset: their length changes with f
            issues.append(ConfigIssue("warmup_epochs", f"the budget is in {'images' if self.train_images else 'steps'} "
                                      "but the warm-up is in epochs of the training subset, whose length changes with "
                                      "data_fraction: state it as warmup_fraction (of the budget) or warmup_steps"))
        if self.min_lr > self.resolve().lr:
            issues.append(ConfigIssue("min_lr", f"larger than the scaled lr ({self.resolve().lr:g})"))
        if issues:
            raise ConfigError(issues)
        return self

    # ------------------------------------------------------------------------------ API
    @classmethod
    def preset(cls, name: str) -> "TrialConfig":
        """The named starting points: 'imagenet' (the paper's recipe), 'cifar', 'smoke'."""
        if name not in PRESETS:
            raise ConfigError([ConfigIssue("preset", f"unknown preset '{name}'{did_you_mean(name, list(PRESETS))}; "
                                                     f"choose from {sorted(PRESETS)}")])
        return cls.from_dict(PRESETS[name])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrialConfig":
        """Validate a plain dict, raising `ConfigError` (with key paths) instead of pydantic's error.

        A top-level ``preset: NAME`` key starts from that preset and deep-merges the rest over it.
        """
        data = dict(data)
        if "preset" in data:
            name = data.pop("preset")
            if name not in PRESETS:
                raise ConfigError([ConfigIssue("preset", f"unknown preset {name!r}"
                                                         f"{did_you_mean(str(name), list(PRESETS))}")])
            base = copy.deepcopy(PRESETS[name])
            set_exclusive(base, data)
            data = _deep_merge(base, data)
        for group in EXCLUSIVE_GROUPS:  # a key given here replaces the defaults' choice of its group
            if any(data.get(k) is not None for k in group):
                for k in group:
                    data.setdefault(k, None)
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(_issues_from_validation(err, {"": list(cls.model_fields)})) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict that `from_dict` accepts back unchanged."""
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        """Stable 16-hex-digit hash of everything that can change results (see NON_RESULT_FIELDS)."""
        payload = {k: v for k, v in self.to_dict().items()
                   if k not in NON_RESULT_FIELDS and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def resolve(self, world_size: int = 1, cuda: bool = False) -> "ResolvedTrial":
        """Derived values, computed from the immutable config (so resume can never re-apply them)."""
        scale = self.batch_size / self.lr_base_batch if self.lr_base_batch else 1.0
        amp = self.amp if self.amp != "auto" else ("bf16" if cuda else "fp32")
        return ResolvedTrial(
            lr=self.lr * scale,
            world_size=world_size,
            batch_per_rank=self.batch_size // world_size,
            amp=amp,
        )


@dataclass(frozen=True)
class ResolvedTrial:
    """Values derived once from a TrialConfig; recorded in out_dir/config.json under 'resolved'."""

    lr: float
    world_size: int
    batch_per_rank: int
    amp: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# -------------------------------------------------------------------------------- loading helpers
def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed with yaml.safe_load) to a config dict.

    The overrides are one level: one of them may replace the file's choice in an exclusive group (the budget,
    the warm-up), two of the same group are an error."""
    out = copy.deepcopy(dict(data))
    given = [item.partition("=")[0].strip() for item in overrides]
    for group in EXCLUSIVE_GROUPS:
        clash = [k for k in given if k in group]
        if len(set(clash)) > 1:
            raise ConfigError([ConfigIssue(clash[-1], f"set only one of {', '.join(group)} (the command line gives "
                                                      f"{' and '.join(dict.fromkeys(clash))})")])
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([ConfigIssue("", f"override {item!r} is not of the form key=value")])
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError([ConfigIssue(key, f"'{p}' is not a mapping, cannot set '{key}'")])
            node = nxt
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError([ConfigIssue(key, f"cannot parse value {raw!r}: {err}")]) from None
        if len(parts) == 1:
            set_exclusive(node, {parts[0]: value})
        node[parts[-1]] = value
    return out


def load_config(source: str | Path | Mapping[str, Any] | None = None,
                overrides: Sequence[str] = ()) -> TrialConfig:
    """A TrialConfig from a preset name, a YAML file or a dict, plus ``key=value`` overrides.

    Raises ConfigError for every user mistake (missing file, bad YAML, unknown key, wrong type).
    """
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, Mapping):
        data = dict(source)
    elif str(source) in PRESETS and not Path(source).is_file():
        data = {"preset": str(source)}
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError([ConfigIssue("", f"config file {str(path)!r} not found and not a preset "
                                               f"(presets: {sorted(PRESETS)})")])
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError([ConfigIssue("", f"{path}: invalid YAML: {err}")]) from None
        if not isinstance(loaded, dict):
            raise ConfigError([ConfigIssue("", f"{path}: expected a mapping of config keys at top level")])
        data = loaded
    return TrialConfig.from_dict(apply_overrides(data, overrides))

