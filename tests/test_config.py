"""TrialConfig: the paper's defaults, presets, validation errors with key paths, hashing, overrides."""

from __future__ import annotations

import pytest

from convit.config import ConfigError, TrialConfig, apply_overrides, load_config
from convit.presets import PRESETS


def issues(data) -> dict[str, str]:
    with pytest.raises(ConfigError) as exc:
        TrialConfig.from_dict(data)
    return {i.path: i.message for i in exc.value.issues}


def test_defaults_are_the_paper_recipe():
    c = TrialConfig()
    assert (c.opt, c.lr, c.weight_decay, c.warmup_epochs, c.epochs) == ("adamw", 5e-4, 0.05, 5.0, 300)
    assert (c.label_smoothing, c.mixup, c.cutmix, c.reprob) == (0.1, 0.8, 1.0, 0.25)
    assert c.randaugment == "rand-m9-mstd0.5-inc1" and c.repeated_aug == 3
    assert c.repeated_aug_budget == "deit"  # DeiT's RASampler: an epoch is about len(dataset) samples
    assert c.model_kwargs == {"drop_path_rate": 0.1}
    assert TrialConfig.preset("imagenet") == c


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate_and_roundtrip(name):
    c = TrialConfig.preset(name)
    again = TrialConfig.from_dict(c.to_dict())
    assert again == c and again.config_hash() == c.config_hash()


def test_lr_is_scaled_once_and_recorded_not_stored():
    c = TrialConfig(batch_size=256, lr=5e-4)
    assert c.resolve().lr == pytest.approx(2.5e-4)
    # resolving never changes the config: a resumed trial resolves the same lr again
    assert c.lr == 5e-4 and TrialConfig.from_dict(c.to_dict()).resolve().lr == pytest.approx(2.5e-4)
    assert TrialConfig(batch_size=256, lr_base_batch=None).resolve().lr == 5e-4


def test_architecture_knobs_are_checked():
    assert TrialConfig(model="deit_tiny", model_kwargs={"depth": 6, "num_heads": 4, "embed_dim": 128,
                                                        "mlp_ratio": 2.0}).model_kwargs["depth"] == 6
    assert "GPSA layers but the model has depth 4" in issues(
        {"model_kwargs": {"depth": 4, "local_up_to_layer": 6}})["model_kwargs.local_up_to_layer"]
    assert "perfect square" in issues({"model": "convit_tiny", "model_kwargs": {"num_heads": 3}})[
        "model_kwargs.num_heads"]
    assert TrialConfig(model_kwargs={"num_heads": 3, "use_local_init": False}).model_kwargs["num_heads"] == 3
    assert "multiple of num_heads" in issues({"model": "deit_tiny", "model_kwargs": {"embed_dim": 100,
                                                                                     "num_heads": 3}})[
        "model_kwargs.embed_dim"]
    assert TrialConfig(model_kwargs={"depth": 3}).model_kwargs == {"depth": 3}  # 1 GPSA + 2 MHSA by default


def test_amp_auto():
    assert TrialConfig().resolve(cuda=False).amp == "fp32"
    assert TrialConfig().resolve(cuda=True).amp == "bf16"


def test_unknown_key_suggests():
    assert issues({"epocs": 3}) == {"epocs": "unknown key (did you mean 'epochs'?)"}


def test_model_kwargs_are_checked_per_family():
    assert "did you mean 'locality_strength'" in issues({"model_kwargs": {"locality_strenght": 1}})[
        "model_kwargs.locality_strenght"]
    assert "ConViT models only" in issues({"model": "deit_small", "model_kwargs": {"gating_init": 1}})[
        "model_kwargs.gating_init"]
    assert "model_kwargs.num_classes" in issues({"model_kwargs": {"num_classes": 3}})
    assert "multiple of patch_size" in issues({"model_kwargs": {"img_size": 30, "patch_size": 4}})["model_kwargs"]
    assert "model_kwargs.local_up_to_layer" in issues({"model_kwargs": {"local_up_to_layer": "x"}})
    ok = TrialConfig(model="deit_tiny", model_kwargs={"img_size": 32, "patch_size": 4})
    assert ok.model_kwargs == {"img_size": 32, "patch_size": 4}


@pytest.mark.parametrize("bad, path", [
    ({"data_fraction": 0}, "data_fraction"), ({"data_fraction": 1.5}, "data_fraction"),
    ({"epochs": "many"}, "epochs"), ({"dataset": "mnistt"}, "dataset"), ({"model": "convit_smal"}, "model"),
    ({"crop_scale": [0.9, 0.1]}, "crop_scale"), ({"min_lr": 1.0}, "min_lr"),
])
def test_bad_values_name_their_key(bad, path):
    assert path in issues(bad)


def test_hash_is_stable_and_ignores_non_result_fields():
    a = TrialConfig.from_dict({"seed": 1, "lr": 1e-3})
    b = TrialConfig.from_dict({"lr": 1e-3, "seed": 1})
    assert a.config_hash() == b.config_hash() and len(a.config_hash()) == 16
    assert a.model_copy(update={"num_workers": 0, "data_root": "/x"}).config_hash() == a.config_hash()
    assert TrialConfig.from_dict({"seed": 2, "lr": 1e-3}).config_hash() != a.config_hash()
    assert TrialConfig.from_dict({"seed": 1, "lr": 1e-3, "model_kwargs": {"locality_strength": 0.1}}
                                 ).config_hash() != a.config_hash()


def test_overrides_and_presets(tmp_path):
    d = apply_overrides({"model_kwargs": {"img_size": 32}}, ["model_kwargs.patch_size=4", "clip_grad=null"])
    assert d == {"model_kwargs": {"img_size": 32, "patch_size": 4}, "clip_grad": None}
    c = load_config("smoke", ["model_kwargs.locality_strength=0.1", "epochs=3"])
    assert c.model_kwargs["patch_size"] == 8 and c.model_kwargs["locality_strength"] == 0.1 and c.epochs == 3
    f = tmp_path / "c.yaml"
    f.write_text("preset: cifar\ndata_fraction: 0.1\nmodel_kwargs: {locality_strength: 0.01}\n")
    c = load_config(f)
    assert c.dataset == "cifar10" and c.model_kwargs["patch_size"] == 4 and c.data_fraction == 0.1
    with pytest.raises(ConfigError, match="not of the form"):
        apply_overrides({}, ["epochs"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
