"""Sweep files: every bad file in tests/bad_sweeps gives its expected error(s), located by file, line and key;
good files expand into stable trials."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.errors import SpecError
from orchestrator.spec import expand, load_sweep
from orchestrator.spec import parse_spec, parse_spec_partial

BAD = Path(__file__).parent / "bad_sweeps"
EXPECT = re.compile(r"^# expect: (\d+): ([^:]*): (.+)$")


def _expectations(path: Path) -> list[tuple[int, str, str]]:
    found = [EXPECT.match(line) for line in path.read_text().splitlines()]
    return [(int(m.group(1)), m.group(2), m.group(3)) for m in found if m]


BAD_FILES = sorted(BAD.glob("*.yaml"))


def test_corpus_is_there():
    assert len(BAD_FILES) >= 20
    assert all(_expectations(p) for p in BAD_FILES), "every bad file states its expected error"


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.stem)
def test_bad_sweep_reports_expected_error(path: Path):
    with pytest.raises(SpecError) as info:
        load_sweep(path)
    rendered = [str(i) for i in info.value.issues]
    for line, key, text in _expectations(path):
        wanted = f"{path}:{line}: {key}: " if key else f"{path}:{line}: "
        assert any(r.startswith(wanted) and text in r for r in rendered), (
            f"expected '{wanted}...{text}' among:\n" + "\n".join(rendered))


def test_many_problems_reported_together_once_each():
    with pytest.raises(SpecError) as info:
        load_sweep(BAD / "many_problems.yaml")
    issues = info.value.issues
    assert len(issues) == len(_expectations(BAD / "many_problems.yaml"))
    assert len({str(i) for i in issues}) == len(issues)


SWEEP = """
name: demo
base:
  preset: smoke
  epochs: 1
grid:
  model: [convit_tiny, deit_tiny]
  data_fraction: [0.5, 1.0]
seeds: 2
exclude:
  - {model: deit_tiny, data_fraction: 0.5}
"""

REORDERED = """
seeds: [0, 1]
exclude:
  - {data_fraction: 0.5, model: deit_tiny}
grid:
  model: [convit_tiny, deit_tiny]
  data_fraction: [0.5, 1.0]
base:
  epochs: 1
  preset: smoke
name: demo
"""


def test_expansion_grid_seeds_exclude():
    trials = expand(parse_spec(SWEEP))
    combos = {(t.axes["model"], t.axes["data_fraction"], t.axes["seed"]) for t in trials}
    assert len(trials) == 6
    assert ("deit_tiny", 0.5, 0) not in combos and ("convit_tiny", 0.5, 1) in combos
    assert all(t.config.epochs == 1 and t.config.dataset == "synthetic" for t in trials)
    assert len({t.id for t in trials}) == 6
    assert trials[0].name == "model=convit_tiny,data_fraction=0.5,seed=0"


def test_ids_stable_whatever_the_key_order():
    ids = {t.id: t.axes for t in expand(parse_spec(SWEEP))}
    again = {t.id: t.axes for t in expand(parse_spec(REORDERED))}
    assert ids == again
    changed = {t.id for t in expand(parse_spec(SWEEP.replace("epochs: 1", "epochs: 2")))}
    assert not changed & set(ids)


def test_ids_ignore_where_the_data_lives():
    a = expand(parse_spec(SWEEP))
    b = expand(parse_spec(SWEEP, overrides=["data_root=/elsewhere"]))
    assert [t.id for t in a] == [t.id for t in b]


def test_zip_dotted_keys_and_nested_base():
    spec = parse_spec("""
name: z
base:
  preset: smoke
  model_kwargs: {locality_strength: 0.5}
zip:
  model_kwargs.local_up_to_layer: [3, 6]
  model_kwargs.gating_init: [0.0, 2.0]
""")
    trials = expand(spec)
    kwargs = [t.config.model_kwargs for t in trials]
    assert [(k["local_up_to_layer"], k["gating_init"], k["locality_strength"]) for k in kwargs] == [
        (3, 0.0, 0.5), (6, 2.0, 0.5)]
    assert kwargs[0]["img_size"] == 32  # merged into the preset's kwargs, not replacing them
    assert trials[0].name == "local_up_to_layer=3,gating_init=0"


def test_random_axes_seeded_and_in_range():
    text = """
name: r
base: smoke
random:
  samples: 4
  seed: 7
  axes:
    lr: {distribution: loguniform, low: 1.0e-4, high: 1.0e-2}
    batch_size: {distribution: randint, low: 8, high: 17}
    model: {distribution: choice, values: [convit_tiny, deit_tiny]}
"""
    first = expand(parse_spec(text))
    again = expand(parse_spec(text))
    assert [t.id for t in first] == [t.id for t in again] and len(first) == 4
    assert all(1e-4 <= t.config.lr <= 1e-2 and 8 <= t.config.batch_size < 17 for t in first)
    other = expand(parse_spec(text.replace("seed: 7", "seed: 8")))
    assert [t.axes for t in other] != [t.axes for t in first]


def test_overrides_reach_base_and_sections():
    spec = parse_spec(SWEEP, overrides=["epochs=3", "seeds=[5]", "grid.data_fraction=[1.0]",
                                        "local.max_parallel=2"])
    trials = expand(spec)
    assert {t.axes["seed"] for t in trials} == {5}
    assert {t.config.epochs for t in trials} == {3}
    assert len(trials) == 2 and spec.local.max_parallel == 2


def test_override_errors_are_located_on_the_command_line():
    with pytest.raises(SpecError) as info:
        load_sweep(BAD.parent / "bad_sweeps" / ".." / "bad_sweeps" / "duplicate_value.yaml",
                   ["seeds=[0]", "epochs=0", "model=deit_tiny", "nonsense"])
    text = str(info.value)
    assert "<command line>: epochs: Input should be greater than or equal to 1" in text
    assert "<command line>: nonsense: 'nonsense' is not key=value" in text


def test_override_of_an_axis_is_refused():
    with pytest.raises(SpecError, match=r"'model' is a sweep axis; override the axis instead \(grid.model"):
        parse_spec(SWEEP, overrides=["model=deit_tiny"])


def test_backend_sections_are_typed():
    spec = parse_spec("name: s\nbase: smoke\nslurm: {partition: gpu, gpus_per_node: 8, timeout_min: 4320}\n"
                      "ray: {cpus_per_trial: 0.5, scheduler: {type: asha}}\n")
    assert spec.slurm.gpus_per_node == 8 and spec.ray.scheduler.type == "asha"
    with pytest.raises(SpecError, match=r"ray.scheduler.type: Input should be 'fifo', 'asha' or 'pbt'"):
        parse_spec("name: s\nbase: smoke\nray: {scheduler: {type: hyperband}}\n")


SHIPPED = Path(__file__).resolve().parents[1] / "sweeps"


SHIPPED_SIZES = {
    "quickstart": (2, ["grid.model=[deit_tiny]"], 1),
    "sample_efficiency_cpu": (18, ["grid.data_fraction=[0.005]", "seeds=[0]"], 2),
    "data_fraction": (30, ["grid.data_fraction=[0.1,0.3,1.0]", "train_images=50000", "model_kwargs.patch_size=8",
                           "randaugment=null", "mixup=0", "cutmix=0", "reprob=0", "num_workers=0"], 18),
    "data_fraction_gpu": (20, ["seeds=[0]"], 10),
    "gating_init": (21, ["grid.variant=[convit,deit]", "train_images=12800", "seeds=[0]"], 2),
    "locality_layers": (20, ["grid.model_kwargs.locality_strength=[0.1,1.0]",
                             "grid.model_kwargs.local_up_to_layer=[0,3]", "seeds=[0]"], 3),
    "imagenet_paper": (6, ["grid.model=[convit_tiny,deit_tiny]", "dataset=cifar10", "data_root=null",
                           "batch_size=64", "epochs=1", "amp=fp32", "model_kwargs.img_size=32",
                           "model_kwargs.patch_size=8", "crop_scale=[0.35,1.0]", "crop_pct=1.0", "repeated_aug=1"], 2),
    "ui_demo": (8, ["grid.model=[deit_tiny]", "seeds=[0]"], 2),
}


def test_every_shipped_sweep_is_checked():
    assert {p.stem for p in SHIPPED.glob("*.yaml")} == set(SHIPPED_SIZES)


@pytest.mark.parametrize("name", sorted(SHIPPED_SIZES))
def test_shipped_sweeps_expand_and_shrink(name: str):
    count, overrides, small = SHIPPED_SIZES[name]
    spec, trials = load_sweep(SHIPPED / f"{name}.yaml")
    assert spec.name == name and len(trials) == count
    _, shrunk = load_sweep(SHIPPED / f"{name}.yaml", overrides)
    assert len(shrunk) == small


def test_data_fraction_budget_is_constant_and_ablations_are_table_3():
    _, trials = load_sweep(SHIPPED / "data_fraction.yaml")
    assert {t.config.train_images for t in trials} == {4_500_000} and {t.config.epochs for t in trials} == {None}
    _, trials = load_sweep(SHIPPED / "locality_layers.yaml")
    no_gpsa = [t for t in trials if t.axes["model_kwargs.local_up_to_layer"] == 0]
    assert len(no_gpsa) == 2 and {t.axes["seed"] for t in no_gpsa} == {0, 1}  # one alpha, two seeds
    _, trials = load_sweep(SHIPPED / "gating_init.yaml")
    rows = {t.axes["variant"]: t.config for t in trials if t.axes["seed"] == 0}
    kw = {name: (c.model, c.model_kwargs.get("freeze_gating", False), c.model_kwargs.get("use_local_init", True),
                 c.model_kwargs.get("freeze_gpsa", False)) for name, c in rows.items()}
    assert kw == {  # (model, gating frozen, conv init, GPSA frozen): the rows of the paper's Table 3
        "convit": ("convit_tiny", False, True, False), "gating_frozen": ("convit_tiny", True, True, False),
        "no_conv_init": ("convit_tiny", False, False, False), "neither": ("convit_tiny", True, False, False),
        "gpsa_frozen_conv": ("convit_tiny", False, True, True),
        "gpsa_frozen_random": ("convit_tiny", False, False, True), "deit": ("deit_tiny", False, True, False)}
    assert len({c.config_hash() for c in rows.values()}) == 7


VARIANTS = """\
name: v
base: {preset: smoke}
variants:
  a: {}
  b: {model_kwargs.freeze_gating: true}
  c: {model: deit_tiny, model_kwargs: {depth: 3}}
seeds: [0, 1]
"""


def test_named_variants_are_an_axis_and_can_be_selected():
    spec = parse_spec(VARIANTS, "v.yaml")
    trials = expand(spec)
    assert spec.axis_keys() == ["variant", "seed"] and len(trials) == 6
    assert trials[0].name == "variant=a,seed=0" and trials[0].axes == {"variant": "a", "seed": 0}
    c = next(t for t in trials if t.axes["variant"] == "c")
    assert c.config.model == "deit_tiny" and c.config.model_kwargs["depth"] == 3
    picked = expand(parse_spec(VARIANTS, "v.yaml", ["grid.variant=[c,a]"]))
    assert [t.axes["variant"] for t in picked] == ["c", "c", "a", "a"]
    assert expand(parse_spec(VARIANTS + "exclude: [{variant: b}]\n", "v.yaml"))[2].axes["variant"] == "c"


@pytest.mark.parametrize("extra, expected", [
    ("  d: {model_kwargs.freez_gating: true}\n", "v.yaml:7: variants.d.model_kwargs.freez_gating: unknown model argument (did you mean 'freeze_gating'?)"),
    ("  d: {model_kwargs.gating_init: .nan}\n", "v.yaml:7: variants.d.model_kwargs.gating_init:"),
    ("  d: {preset: imagenet, lr: 0.01}\n", "v.yaml:7: variants.d.preset: a variant cannot change the preset"),
    ("exclude: [{variant: [a, nosuch]}]\n", "v.yaml:7: exclude[0].variant: no variant named 'nosuch'"),
    ("  d: {model: deit_tiny, model_kwargs.freeze_gating: true}\n", "v.yaml:7: variants.d.model_kwargs.freeze_gating: "
                                                                   "applies to ConViT models only"),
])
def test_bad_variants_are_located(extra, expected):
    text = VARIANTS.replace("seeds: [0, 1]\n", "") + extra
    with pytest.raises(SpecError) as exc:
        load_sweep_text(text)
    assert any(str(i).startswith(expected) for i in exc.value.issues), [str(i) for i in exc.value.issues]


def test_unknown_variant_selection_suggests():
    with pytest.raises(SpecError, match=r"no variant named 'bb' \(did you mean 'b'\?\)"):
        load_sweep_text(VARIANTS, ["grid.variant=[a,bb]"])


def load_sweep_text(text: str, overrides=()):
    spec, issues = parse_spec_partial(text, "v.yaml", overrides)
    if issues:
        raise SpecError(issues)
    return expand(spec)


def test_trial_ids_survive_new_config_keys_at_their_default():
    """A submitted sweep stays resumable across upgrades: the quickstart's ids as first published (a key added
    later, at its default, e.g. init_checkpoint: null, is left out of the hash: convit.config.LATER_FIELDS)."""
    _, trials = load_sweep(SHIPPED / "quickstart.yaml")
    assert [t.id for t in trials] == ["9b507c590922", "a372771f8a05"]
    assert load_sweep(SHIPPED / "quickstart.yaml", ["init_checkpoint=/x.pt"])[1][0].id != "9b507c590922"
