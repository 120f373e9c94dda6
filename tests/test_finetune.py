"""Fine-tuning from published weights (issue 13): ``init_checkpoint``, convit.models.finetune, timm's classifier API.

The "published" checkpoints are random-weight timm models (no network) saved to disk in timm's format.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from convit.config import ConfigError, TrialConfig
from convit.data import DataError
from convit.engine import run_trial
from convit.models import InitCheckpointError, create_model, load_init_checkpoint, read_state_dict
from convit.models.positions import relative_offsets

timm = pytest.importorskip("timm")
from timm.layers import resample_abs_pos_embed, resample_patch_embed  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CIFAR = dict(img_size=32, patch_size=4, num_classes=10)
RESAMPLED = {"pos_embed", "patch_embed.proj.weight"}
HEAD = {"head.weight", "head.bias"}


def _timm_checkpoint(tmp_path, name="convit_tiny", **kwargs):
    """A timm model at its published configuration (224 px, patch 16, 1000 classes), every weight perturbed (so that
    no tensor equals the structured init by chance), saved as a plain state dict like timm's published files."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


@pytest.fixture(scope="module")
def convit_ckpt(tmp_path_factory):
    return _timm_checkpoint(tmp_path_factory.mktemp("ckpt"))


# ----------------------------------------------------------------------------------------------- loading rules
def test_timm_224_16_loads_into_cifar_32_4(convit_ckpt):
    path, ckpt = convit_ckpt
    torch.manual_seed(1)
    model = create_model("convit_tiny", **CIFAR)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_init_checkpoint(model, path)
    state = model.state_dict()

    assert set(report.reinitialised) == HEAD and set(report.resampled) == RESAMPLED
    # head re-initialised (1000 -> 10 classes): the model's own fresh head, not a slice of the checkpoint's
    assert state["head.weight"].shape == (10, 192) and torch.equal(state["head.weight"], before["head.weight"])
    assert torch.equal(state["head.bias"], before["head.bias"])
    # positional embedding: 14x14 grid -> 8x8, bicubic; patch embedding kernel 16 -> 4 (FlexiViT resize)
    assert ckpt["pos_embed"].shape == (1, 196, 192) and state["pos_embed"].shape == (1, 64, 192)
    expected = resample_abs_pos_embed(ckpt["pos_embed"], new_size=[8, 8], old_size=[14, 14], num_prefix_tokens=0,
                                      interpolation="bicubic", antialias=True)
    torch.testing.assert_close(state["pos_embed"], expected, rtol=0, atol=0)
    assert state["patch_embed.proj.weight"].shape == (192, 3, 4, 4)
    torch.testing.assert_close(state["patch_embed.proj.weight"],
                               resample_patch_embed(ckpt["patch_embed.proj.weight"], new_size=[4, 4]), rtol=0, atol=0)
    # everything else: exactly the checkpoint's tensors
    others = set(ckpt) - HEAD - RESAMPLED
    assert others == set(state) - HEAD - RESAMPLED and len(others) > 150
    assert [k for k in sorted(others) if not torch.equal(state[k], ckpt[k])] == []
    # GPSA's relative positions are the model's own 8x8 grid, not the checkpoint's 14x14
    for attn in model.gpsa_layers().values():
        assert attn.rel_indices.shape == (64, 64, 3)
        torch.testing.assert_close(attn.rel_indices, relative_offsets((8, 8)))
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_pos_embed_resampling_keeps_a_constant_field(tmp_path):
    path, ckpt = _timm_checkpoint(tmp_path)
    ckpt["pos_embed"] = torch.arange(192.0).expand(1, 196, 192).clone()
    torch.save(ckpt, path)
    model = create_model("convit_tiny", img_size=48, patch_size=8, num_classes=10)  # 6x6 grid, patch 8
    load_init_checkpoint(model, path)
    torch.testing.assert_close(model.pos_embed, torch.arange(192.0).expand(1, 36, 192), rtol=0, atol=1e-4)


def test_same_shape_checkpoint_loads_exactly_including_the_head(tmp_path):
    torch.manual_seed(2)
    source = create_model("convit_tiny", **CIFAR)
    path = tmp_path / "ours.pt"
    torch.save({"format": 1, "model": source.state_dict(), "optimizer": {}, "epoch": 3}, path)  # engine's format
    model = create_model("convit_tiny", **CIFAR)
    report = load_init_checkpoint(model, path)
    assert not report.reinitialised and not report.resampled
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------------------------- refusals
def test_deit_checkpoint_given_to_convit_is_refused_with_the_key_list(tmp_path):
    path, _ = _timm_checkpoint(tmp_path, "deit_tiny_patch16_224")
    model = create_model("convit_tiny", **CIFAR)
    with pytest.raises(InitCheckpointError) as err:
        load_init_checkpoint(model, path)
    msg = str(err.value)
    assert str(path) in msg and "does not fit the model" in msg
    assert "missing: blocks.0.attn.gating_param" in msg and "missing: blocks.9.attn.pos_proj.weight" in msg
    assert "unexpected: blocks.0.attn.qkv.bias" in msg and "unexpected: blocks.11.attn.qkv.bias" in msg
    assert "mismatched: pos_embed: checkpoint [1, 197, 192], model [1, 64, 192]" in msg


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(InitCheckpointError, match="nope.pt: no such file"):
        read_state_dict(tmp_path / "nope.pt")


@pytest.mark.parametrize("content", ["text", "list", "dict_of_numbers", "empty"])
def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "text":
        path.write_text("model weights, honest\n")
    else:
        torch.save({"list": [1, 2, 3], "dict_of_numbers": {"lr": 0.1, "epoch": 3}, "empty": {}}[content], path)
    with pytest.raises(InitCheckpointError) as err:
        read_state_dict(path)
    assert str(path) in str(err.value)
    assert ("not a PyTorch checkpoint" if content == "text" else "not a state dict") in str(err.value)


class Payload:
    """A pickle that would run code when loaded without weights_only: it calls open(marker, 'w')."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_pickle_with_a_custom_class_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"pos_embed": torch.zeros(1), "payload": Payload(marker)}, path)
    with pytest.raises(InitCheckpointError, match="refused: the file is a pickle") as err:
        read_state_dict(path)
    assert str(path) in str(err.value) and not marker.exists()


# ----------------------------------------------------------------------------------------------- classifier API
def test_timm_classifier_api():
    model = create_model("convit_tiny", img_size=16, patch_size=4, depth=2, num_classes=3)
    assert model.get_classifier() is model.head and model.head.out_features == 3
    model.reset_classifier(5)
    assert model.num_classes == 5 and model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    assert float(model.head.bias.detach().abs().sum()) == 0.0 and 0 < float(model.head.weight.detach().std()) < 0.05
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), torch.nn.Identity)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 192)
    x = model.forward_features(torch.randn(2, 3, 16, 16))
    model.reset_classifier(0, global_pool="avg")
    torch.testing.assert_close(model.forward_head(x), x[:, 1:].mean(dim=1))
    model.reset_classifier(0, global_pool="")
    assert model.forward_head(x).shape == x.shape
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, global_pool="max")
    no_token = create_model("convit_tiny", img_size=16, patch_size=4, depth=2, local_up_to_layer=2, num_classes=3)
    with pytest.raises(ValueError, match="class token"):
        no_token.reset_classifier(3, global_pool="token")
    deit = create_model("deit_tiny", img_size=16, patch_size=4, depth=2, num_classes=3)
    deit.reset_classifier(7)
    assert deit(torch.randn(1, 3, 16, 16)).shape == (1, 7)


# ----------------------------------------------------------------------------------------------- config + engine
def _config(path, **extra):
    return TrialConfig.from_dict({"preset": "smoke", "model_kwargs": {"img_size": 32, "patch_size": 4},
                                  "num_classes": 10, "train_steps": 2, "warmup_steps": 0, "init_checkpoint": str(path),
                                  **extra})


def test_config_key():
    assert TrialConfig.preset("smoke").init_checkpoint is None
    with pytest.raises(ConfigError, match="init_checkpoint: an empty path"):
        TrialConfig.from_dict({"preset": "smoke", "init_checkpoint": " "})
    a, b = (TrialConfig.from_dict({"preset": "smoke", "init_checkpoint": p}) for p in ("a.pt", "b.pt"))
    assert a.config_hash() != b.config_hash()  # the starting weights change the results


def test_fine_tune_two_steps_through_the_engine(tmp_path, convit_ckpt):
    path, ckpt = convit_ckpt
    out = tmp_path / "trial"
    cfg = _config(path)
    final = run_trial(cfg, out)
    numbers = {k: v for k, v in final.items() if isinstance(v, float)}
    assert numbers and all(math.isfinite(v) for v in numbers.values())
    # the trial started from the checkpoint: the untrained-model reference (init/*) has the checkpoint's gates
    for i in range(10):
        assert final[f"init/gating/l{i}"] == pytest.approx(
            float(torch.sigmoid(ckpt[f"blocks.{i}.attn.gating_param"]).mean()), abs=1e-5)
    state = torch.load(sorted((out / "checkpoints").glob("*.pt"))[-1], map_location="cpu", weights_only=True)
    assert state["model"]["head.weight"].shape == (10, 192) and state["model"]["pos_embed"].shape == (1, 64, 192)
    # two small steps away from the checkpoint's weights, not from a random init
    assert (state["model"]["blocks.11.mlp.fc1.weight"] - ckpt["blocks.11.mlp.fc1.weight"]).abs().max() < 0.05
    # a finished (or resumed) trial does not read init_checkpoint again
    path_moved = path.with_suffix(".moved")
    path.rename(path_moved)
    try:
        assert run_trial(cfg, out) == final
    finally:
        path_moved.rename(path)


@pytest.mark.parametrize("case", ["missing", "deit", "evil"])
def test_engine_refuses_a_bad_init_checkpoint_before_writing_anything(tmp_path, case):
    if case == "missing":
        path = tmp_path / "missing.pt"
    elif case == "deit":
        path, _ = _timm_checkpoint(tmp_path, "deit_tiny_patch16_224")
    else:
        path = tmp_path / "evil.pt"
        torch.save({"payload": Payload(tmp_path / "ran")}, path)
    out = tmp_path / "trial"
    with pytest.raises(DataError) as err:
        run_trial(_config(path), out)
    assert err.value.key == "init_checkpoint" and str(path) in str(err.value)
    assert not out.exists() and not (tmp_path / "ran").exists()


def test_the_command_line_refuses_a_bad_init_checkpoint_with_exit_2_and_writes_nothing(tmp_path: Path):
    import subprocess
    import sys

    not_weights = tmp_path / "notes.pt"
    not_weights.write_bytes(b"not a checkpoint")
    for path, said in ((tmp_path / "missing.pt", "is not a file"), (not_weights, "notes.pt")):
        out = tmp_path / f"out-{path.stem}"
        run = subprocess.run([sys.executable, "-m", "convit.train", "smoke", f"init_checkpoint={path}", "--out",
                              str(out)], capture_output=True, text=True, timeout=300,
                             cwd=Path(__file__).resolve().parents[1])
        assert run.returncode == 2, run.stderr
        assert said in run.stderr and "Traceback" not in run.stderr
        assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints").exists()
