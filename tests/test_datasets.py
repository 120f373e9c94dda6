"""The datasets a researcher already has, read in their real on-disk layouts (written by tests/layouts.py from the
shared CIFAR-10 arrays), through the product: torchvision's named layouts, ImageFolder, Hugging Face; native image
size and channels, normalisation, the `convit-sweep data` report, bad input, and a sweep over every source."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from convit.config import ConfigError, TrialConfig
from convit.data import DataError, build_data, check_data, data_geometry
from convit.data.named import CIFAR10_STATS
from convit.data.registry import open_splits
from convit.data.stats import computed_stats
from convit.presets import PRESETS
from tests import layouts
from tests.test_local import cli

pytestmark = pytest.mark.skipif(not (layouts.CIFAR / "train_0.npz").is_file(),
                                reason="the shared CIFAR-10 arrays are not there (set CONVIT_DATA_ROOT)")
PER_CLASS, TEST_PER_CLASS = 12, 4
NAMED = ["cifar10", "cifar100", "mnist", "fashion_mnist", "kmnist", "svhn", "stl10"]
GRAY = {"mnist", "fashion_mnist", "kmnist"}
NATIVE = {"cifar10": 32, "cifar100": 32, "mnist": 28, "fashion_mnist": 28, "kmnist": 28, "svhn": 32, "stl10": 96,
          "imagefolder": 32, "hf": 32}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return layouts.write_all(tmp_path_factory.mktemp("layouts"), PER_CLASS, TEST_PER_CLASS)


def config(dataset: str, root: Path, **extra) -> TrialConfig:
    """The smoke recipe without its image size: the dataset's native size applies."""
    base = {**PRESETS["smoke"], "num_classes": None, "batch_size": 8,
            "model_kwargs": {"patch_size": 4, "drop_path_rate": 0.0}}
    return TrialConfig.from_dict({**base, "dataset": dataset, "data_root": str(root), **extra})


def expected_pixels(dataset: str, index: int) -> np.ndarray:
    """What image ``index`` of the training split must decode to, from the arrays the layout was written from."""
    images, _ = layouts.cifar_sample(PER_CLASS)
    if dataset in GRAY:
        return layouts.gray(images[index:index + 1])[0]
    if dataset == "stl10":
        return images[index].repeat(3, axis=0).repeat(3, axis=1)
    return images[index]


@pytest.mark.parametrize("dataset", NAMED + ["imagefolder", "hf"])
def test_each_layout_reads_labels_pixels_size_and_channels(root: Path, dataset: str):
    splits = open_splits(config(dataset, root))
    _, labels = layouts.cifar_sample(PER_CLASS)
    assert len(splits.train) == 10 * PER_CLASS and len(splits.test) == 10 * TEST_PER_CLASS
    order = np.argsort(labels, kind="stable") if dataset == "imagefolder" else np.arange(len(labels))
    assert np.array_equal(splits.train.labels, labels[order])  # ImageFolder lists class by class
    for i in (0, 37, len(labels) - 1):
        assert np.array_equal(np.asarray(splits.train.image(i)), expected_pixels(dataset, int(order[i])))
    assert splits.channels == (1 if dataset in GRAY else 3) and splits.native_size == NATIVE[dataset]
    assert splits.num_classes == (100 if dataset == "cifar100" else 10)
    if dataset in ("cifar10", "stl10", "imagefolder", "hf"):
        assert splits.classes[:2] == ["airplane", "automobile"]


def test_grayscale_trains_with_one_channel_at_its_native_size_or_three_by_choice(root: Path):
    data = build_data(config("mnist", root))
    assert data.geometry.img_size == 28 and data.geometry.in_chans == 1
    assert data.train[(int(data.subset[0]), 0)][0].shape == (1, 28, 28) and data.test[0][0].shape == (1, 28, 28)
    assert data.stats.mean == (0.1307,)  # the published MNIST value
    rgb = build_data(config("mnist", root, model_kwargs={"patch_size": 7, "in_chans": 3}))
    assert rgb.test[0][0].shape == (3, 28, 28) and rgb.stats.mean == (0.1307,) * 3
    x = rgb.test[0][0]
    assert torch_equal(x[0], x[1]) and torch_equal(x[1], x[2])
    with pytest.raises(DataError, match="is RGB") as caught:
        data_geometry(config("cifar10", root, model_kwargs={"in_chans": 1, "patch_size": 4}))
    assert caught.value.key == "model_kwargs.in_chans"


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_a_patch_size_that_does_not_divide_the_native_size_is_refused_with_the_choices(root: Path):
    with pytest.raises(DataError, match=r"patch_size=16 does not divide img_size=28 \(the native size of 'mnist'\)"
                       r".*among \[2, 4, 7, 14\]") as caught:
        check_data(config("mnist", root, model_kwargs={"patch_size": 16}))
    assert caught.value.key == "model_kwargs.patch_size"
    assert data_geometry(config("stl10", root, model_kwargs={"img_size": 32, "patch_size": 8})).img_size == 32


def test_images_of_differing_sizes_need_an_explicit_img_size(tmp_path: Path):
    from PIL import Image

    for split in ("train", "val"):
        for c, size in (("a", (40, 30)), ("b", (50, 50))):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("L", size, i * 60).save(tmp_path / split / c / f"{i}.png")
    with pytest.raises(DataError, match="differ in size.*set model_kwargs.img_size") as caught:
        check_data(config("imagefolder", tmp_path, batch_size=2))
    assert caught.value.key == "model_kwargs.img_size"
    data = build_data(config("imagefolder", tmp_path, batch_size=2, model_kwargs={"img_size": 32, "patch_size": 8}))
    assert data.geometry.in_chans == 1 and data.test[0][0].shape == (1, 32, 32)  # every file is grayscale


def test_the_published_cifar10_statistics_match_the_arrays(root: Path):
    """The known value (named.py) against a recomputation over the 50,000 training images (JPEG-decoded copy:
    within 0.01)."""
    splits = open_splits(TrialConfig.from_dict({"preset": "cifar", "data_root": str(layouts.CIFAR)}))
    measured = computed_stats(splits)
    assert np.allclose(measured.mean, CIFAR10_STATS.mean, atol=0.01)
    assert np.allclose(measured.std, CIFAR10_STATS.std, atol=0.01)


def test_statistics_of_files_are_computed_once_and_cached(root: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = build_data(config("imagefolder", root)).stats
    images, _ = layouts.cifar_sample(PER_CLASS)
    exact = images.reshape(-1, 3).astype(np.float64) / 255
    assert np.allclose(first.mean, exact.mean(0), atol=1e-4) and np.allclose(first.std, exact.std(0), atol=1e-4)
    assert "computed over 120 of 120" in first.source
    assert len(list((tmp_path / "cache" / "convit" / "norm_stats").glob("*.json"))) == 1
    again = build_data(config("imagefolder", root)).stats
    assert again.mean == first.mean and again.source.endswith("(cached)")
    assert build_data(config("imagefolder", root, norm_stats="imagenet")).stats.mean == (0.485, 0.456, 0.406)
    given = build_data(config("imagefolder", root, norm_stats={"mean": [0.5] * 3, "std": [0.25] * 3})).stats
    assert given.std == (0.25,) * 3 and given.source == "config (norm_stats)"


def test_hugging_face_save_to_disk_with_named_columns(root: Path, tmp_path: Path):
    train, test = layouts.cifar_sample(3), layouts.cifar_sample(2, "test")
    layouts.write_hf(tmp_path / "hf", train, test, image_column="img")
    splits = open_splits(config("hf", tmp_path / "hf", image_column="img"))
    assert len(splits.train) == 30 and np.array_equal(np.asarray(splits.train.image(4)), train[0][4])
    with pytest.raises(DataError, match="no column 'image'.*set image_column") as caught:
        check_data(config("hf", tmp_path / "hf"))
    assert caught.value.key == "image_column"
    with pytest.raises(DataError, match="no column 'y'") as caught:
        check_data(config("hf", tmp_path / "hf", image_column="img", label_column="y"))
    assert caught.value.key == "label_column"


@pytest.mark.parametrize("dataset", NAMED)
def test_missing_files_say_where_to_put_them(tmp_path: Path, dataset: str):
    with pytest.raises(DataError, match=f"{dataset}: files missing under .*Expected .*set download: true"):
        check_data(config(dataset, tmp_path))


def test_a_partial_copy_and_a_wrong_layout_are_refused(root: Path, tmp_path: Path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(root / "cifar-10-batches-py", partial / "cifar-10-batches-py")
    (partial / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"files missing under .*: cifar-10-batches-py/data_batch_3\."):
        check_data(config("cifar10", partial))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="ImageFolder layout expects"):
        check_data(config("imagefolder", tmp_path / "flat"))
    with pytest.raises(DataError, match="neither a save_to_disk folder"):
        check_data(config("hf", tmp_path / "flat"))
    with pytest.raises(ConfigError, match="did you mean 'fashion_mnist'"):
        config("fashionmnist", root)
    with pytest.raises(DataError, match="download applies to the named datasets") as caught:
        check_data(config("imagefolder", root, download=True))
    assert caught.value.key == "download"


def test_download_without_network_says_where_to_put_the_files(tmp_path: Path, monkeypatch):
    """A real download attempt through a proxy that refuses connections (what an offline node sees)."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    with pytest.raises(DataError, match="could not download into .*Place cifar-10-batches-py"):
        check_data(config("cifar10", tmp_path / "new", download=True))


def test_data_report_from_the_command_line(root: Path):
    out = cli("data", "mnist", "--data-root", str(root), "--fractions", "0.5,1", "model_kwargs.patch_size=7")
    assert out.returncode == 0, out.stderr
    assert "28x28, 1 channel -> model input 28x28x1, patch 7 (4x4 grid)" in out.stdout
    assert "mean (0.1307), std (0.3081) (MNIST" in out.stdout
    out = cli("data", "stl10", "--data-root", str(root), "--json", "--fractions", "0.5")
    report = json.loads(out.stdout)
    assert report["splits"] == {"train": 120, "validation": 10, "pool": 110, "test": 40}
    assert report["per_class"]["validation"] == [1] * 10 and report["subsets"] == {"0.5": 60}
    assert report["native_size"] == 96 and report["patch_size"] == 16
    assert cli("data", "mnist", "--fractions", "0,2").returncode == 2
    out = cli("data", "hf", "--data-root", str(root), "image_column=pixels")
    assert out.returncode == 2 and "no column 'pixels'" in out.stderr and not out.stdout


def test_a_sweep_runs_every_source_end_to_end(root: Path, tmp_path: Path):
    spec = tmp_path / "sources.yaml"
    spec.write_text(f"""
name: sources
base:
  preset: smoke
  data_root: {root}
  epochs: 1
  batch_size: 8
  analysis_every: 0
grid:
  dataset: [{", ".join(NAMED)}, imagefolder, hf]
seeds: [0]
local: {{max_parallel: 2, cpus_per_trial: 1}}
""")
    out = cli("submit", str(spec), "--workdir", str(tmp_path / "runs"), timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    trials = list((tmp_path / "runs" / "sweeps" / "sources" / "trials").iterdir())
    assert len(trials) == 9
    seen = {}
    for trial in trials:
        record = json.loads((trial / "config.json").read_text())
        final = json.loads((trial / "final.json").read_text())["metrics"]
        assert np.isfinite(final["test_loss"]), trial
        seen[record["config"]["dataset"]] = record["resolved"]["in_chans"]
    assert seen == {d: (1 if d in GRAY else 3) for d in NAMED + ["imagefolder", "hf"]}


def test_a_grayscale_trial_trains_at_native_size_and_records_what_the_data_decided(root: Path, tmp_path: Path):
    from convit.engine import run_trial

    cfg = config("mnist", root, epochs=1, model_kwargs={"patch_size": 7, "depth": 2}, analysis_every=0)
    final = run_trial(cfg, tmp_path / "trial")
    resolved = json.loads((tmp_path / "trial" / "config.json").read_text())["resolved"]
    assert (resolved["img_size"], resolved["in_chans"], resolved["norm_mean"]) == (28, 1, [0.1307])
    assert "MNIST" in resolved["norm_source"] and np.isfinite(final["test_loss"])


def test_rgb_weights_start_a_grayscale_model_with_the_same_response_to_gray_images():
    """init_checkpoint across channel counts: timm's adapt_input_conv sums the RGB kernels, so a gray image (three
    equal channels) is embedded exactly as the RGB model embedded it."""
    import torch

    from convit.models import adapt_state_dict, create_model

    torch.manual_seed(0)
    rgb = create_model("convit_tiny", num_classes=10, img_size=32, patch_size=4, depth=2)
    gray = create_model("convit_tiny", num_classes=10, img_size=32, patch_size=4, depth=2, in_chans=1)
    state, report = adapt_state_dict(gray, rgb.state_dict())
    gray.load_state_dict(state)
    assert "patch_embed.proj.weight" in report.resampled
    image = torch.rand(2, 1, 32, 32)
    assert torch.allclose(gray.patch_embed(image), rgb.patch_embed(image.repeat(1, 3, 1, 1)), atol=1e-5)


def test_imagefolder_keeps_torchvisions_file_rule():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from convit.data.folder import IMG_EXTENSIONS as OURS

    assert OURS == IMG_EXTENSIONS


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path):
    """Pillow's own conversion of a 16-bit PNG to 8 bits clips at 255: most of the image would turn white."""
    from PIL import Image

    ramp = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 256)  # 0 .. 65280
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(ramp).save(tmp_path / split / c / f"{i}.png")
    splits = open_splits(config("imagefolder", tmp_path, batch_size=2))
    assert splits.channels == 1
    pixels = np.asarray(splits.train.image(0))
    assert pixels.dtype == np.uint8 and np.array_equal(pixels, np.round(ramp / 65535 * 255).astype(np.uint8))


def test_unlabelled_empty_or_mismatched_splits_are_refused_before_training(tmp_path: Path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image as HFImage, Value

    images = [layouts.cifar_sample(1)[0][i] for i in range(10)]
    def table(labels, feature):
        return Dataset.from_dict({"image": images, "label": labels},
                                 features=Features({"image": HFImage(), "label": feature}))
    DatasetDict(train=table(list(range(10)), Value("int64")), test=table([-1] * 10, Value("int64"))) \
        .save_to_disk(str(tmp_path / "unlabelled"))
    with pytest.raises(DataError, match="test split has unlabelled images"):
        check_data(config("hf", tmp_path / "unlabelled", batch_size=2))
    with pytest.raises(DataError, match="column 'label' is .*not images") as caught:
        check_data(config("hf", tmp_path / "unlabelled", image_column="label", batch_size=2))
    assert caught.value.key == "image_column"
    names = ["dog", "cat"] * 5
    DatasetDict(train=table(names, Value("string")), test=table(names[::-1], Value("string"))) \
        .save_to_disk(str(tmp_path / "strings"))
    splits = open_splits(config("hf", tmp_path / "strings", batch_size=2))
    assert splits.classes == ["cat", "dog"] and splits.train.labels.tolist() == [1, 0] * 5
    layouts.write_imagefolder(tmp_path / "folder", layouts.cifar_sample(3), layouts.cifar_sample(1, "test"))
    for png in (tmp_path / "folder" / "val").rglob("*.png"):
        png.unlink()
    with pytest.raises(DataError, match="val' holds no images"):
        check_data(config("imagefolder", tmp_path / "folder", batch_size=2))


def test_explicit_statistics_need_one_value_per_channel(root: Path):
    with pytest.raises(DataError, match="3 value.s. per statistic but the model has 1 input channel") as caught:
        check_data(config("mnist", root, norm_stats={"mean": [0.5] * 3, "std": [0.5] * 3}))
    assert caught.value.key == "norm_stats"


def test_null_img_size_undoes_a_presets_size(root: Path):
    cfg = TrialConfig.from_dict({"preset": "smoke", "dataset": "mnist", "data_root": str(root), "batch_size": 8,
                                 "model_kwargs": {"img_size": None, "patch_size": 7}})
    assert data_geometry(cfg).img_size == 28


def test_an_image_that_cannot_be_decoded_is_named(tmp_path: Path):
    import io

    from PIL import Image

    from convit.data.sources import UnreadableImage

    layouts.write_imagefolder(tmp_path, layouts.cifar_sample(3), layouts.cifar_sample(1, "test"))
    buffer = io.BytesIO()
    Image.effect_noise((32, 32), 60).convert("RGB").save(buffer, "PNG")
    broken = sorted((tmp_path / "train" / "cat").glob("*.png"))[1]
    broken.write_bytes(buffer.getvalue()[:200])  # the header survives: the file is listed and sized
    splits = open_splits(config("imagefolder", tmp_path, batch_size=2))
    with pytest.raises(UnreadableImage, match=f"{broken} cannot be decoded .*truncated"):
        splits.train.image(splits.train.paths.index(str(broken)))
    with pytest.raises(DataError, match=f"{broken} cannot be decoded"):
        computed_stats(splits)
