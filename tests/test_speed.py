"""Tests for helpers.speed: int8 is switched on only where measured faster, and it changes (almost) no prediction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import helpers.speed as speed
import helpers.speed.int8 as int8_module
from helpers.dataset import CrackDataset
from helpers.features import extract_features, feature_cache_key
from helpers.model import backbone_of
from helpers.synthetic_dataset import generate_dataset

NO_INT8 = speed.int8_unavailable_reason("cpu")


@pytest.fixture(autouse=True)
def own_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path / "workbook-data"))


@pytest.fixture(scope="module")
def synthetic_val(tmp_path_factory) -> CrackDataset:
    root = generate_dataset(tmp_path_factory.mktemp("synthetic") / "data", per_class=60, seed=5, progress=False)
    return CrackDataset(root, split="val", progress=False)


@pytest.fixture(scope="module")
def built(model) -> speed.Int8Backbone:
    """One int8 build for the whole module (tens of seconds: torch.compile writes C++)."""
    if NO_INT8:
        pytest.skip(NO_INT8)
    return speed.quantize_backbone(backbone_of(model), speed.calibration_images())


def stub_rates(monkeypatch, float32: float, int8: float) -> None:
    """Measuring without timing anything: each kind of backbone runs at the given rate."""
    monkeypatch.setattr(speed, "int8_unavailable_reason", lambda device: None)
    monkeypatch.setattr(speed, "quantize_backbone", lambda backbone, images: int8_module.Int8Backbone(backbone, 1e-4))
    monkeypatch.setattr(
        speed, "images_per_second", lambda b, images: int8 if isinstance(b, int8_module.Int8Backbone) else float32
    )


# ----------------------------------------------------------------------------- the opt-in
@pytest.mark.parametrize("float32, int8, expected", [(40.0, 85.0, True), (40.0, 43.0, False), (40.0, 20.0, False)])
def test_int8_is_switched_on_only_where_it_measured_faster(model, monkeypatch, float32, int8, expected):
    stub_rates(monkeypatch, float32, int8)
    measured = speed.measure(model, torch.zeros(4, 3, 32, 32), rounds=1)
    assert measured.use_int8 is expected and not speed.enabled()  # measuring alone switches nothing on
    assert speed.enable(measured) is expected and speed.enabled() is expected
    assert f"{int8 / float32:.2f}x" in measured.why
    assert (speed.backbone_for(model, "cpu")[1] == "int8") is expected
    speed.disable()
    assert not speed.enabled() and speed.backbone_for(model, "cpu")[1] == "float32"


@pytest.mark.parametrize("content", ["", "[1, 2]", '{"use_int8": "yes"}', '{"use_int8": true, "machine": "another"}'])
def test_a_missing_corrupt_or_foreign_record_means_float32(model, content):
    speed.record_file().parent.mkdir(parents=True)
    speed.record_file().write_text(content)
    assert not speed.enabled() and speed.backbone_for(model, "cpu")[1] == "float32"


def test_where_int8_cannot_run_the_measurement_says_why_and_keeps_float32(model, monkeypatch):
    monkeypatch.setattr(
        speed, "int8_unavailable_reason", lambda device: "torchao is not installed (pip install torchao)"
    )
    measured = speed.measure(model, torch.zeros(2, 3, 32, 32), rounds=1)
    assert not measured.use_int8 and measured.why.startswith("torchao is not installed")
    assert speed.enable(measured) is False and not speed.record_file().exists()


def test_int8_needs_a_cpu_an_x86_cpu_and_torchao(monkeypatch):
    assert "CPU speed-up" in int8_module.int8_unavailable_reason("cuda")
    monkeypatch.setattr(int8_module.platform, "machine", lambda: "arm64")
    assert "x86-64" in int8_module.int8_unavailable_reason("cpu")
    monkeypatch.setattr(int8_module.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(int8_module.importlib.util, "find_spec", lambda name: None)
    assert "pip install torchao" in int8_module.int8_unavailable_reason("cpu")


def test_the_rounding_check_refuses_features_that_drift():
    features = torch.randn(8, 512)
    assert int8_module.check_rounding(features + 1e-4 * torch.randn(8, 512), features) < 1e-3
    for broken in (torch.randn(8, 512), torch.full((8, 512), float("nan"))):
        with pytest.raises(RuntimeError, match="differ too much"):
            int8_module.check_rounding(broken, features)


# ----------------------------------------------------------------------------- the int8 backbone itself
def test_folding_batchnorm_keeps_the_numbers_and_refuses_other_layers(model):
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            int8_module.fold_batchnorm(backbone_of(model))(images), backbone_of(model)(images), rtol=1e-4, atol=1e-4
        )
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the model keeps its BatchNorms
    with pytest.raises(ValueError, match="knows ResNet18's layers only"):
        int8_module.fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout()))


def test_int8_predictions_agree_with_float32(model, built, synthetic_val, assert_agrees_with_float32):
    reference = extract_features(model, synthetic_val, device="cpu", progress=False)
    images = torch.stack([synthetic_val[i][0] for i in range(len(synthetic_val))])
    rounded = type(reference)(built(images), reference.labels, reference.sample_ids, "int8")
    assert 0 < built.rounding_error < int8_module.MAX_ROUNDING_ERROR  # it rounds: the graph became int8 kernels
    assert_agrees_with_float32(reference, rounded, "int8", min_cosine=0.99)


def test_int8_pads_short_batches_and_splits_long_ones(built, synthetic_val):
    images = torch.stack([synthetic_val[i][0] for i in range(13)])  # one chunk of 10 and a short one of 3
    torch.testing.assert_close(built(images)[10:], built(images[10:]), rtol=1e-5, atol=1e-5)


def test_extract_features_computes_in_int8_once_enabled_with_its_own_cache_key(
    model, built, synthetic_val, monkeypatch, tmp_path
):
    stub_rates(monkeypatch, 40.0, 85.0)
    assert speed.enable(speed.measure(model, torch.zeros(2, 3, 32, 32), rounds=1))
    builds = []
    monkeypatch.setattr(speed, "quantize_backbone", lambda backbone, images: builds.append(1) or built)
    monkeypatch.setattr(speed.LazyInt8, "last_built", None)
    int8 = extract_features(model, synthetic_val, tmp_path, device="cpu", progress=False)
    again = extract_features(model, synthetic_val.first(5), device="cpu", progress=False)
    assert int8.number_format == again.number_format == "int8" and len(builds) == 1  # built once, then kept
    stored = torch.load(Path(tmp_path) / "data-val.pt", weights_only=True)
    assert stored["key"] == feature_cache_key(synthetic_val, model, "int8") != feature_cache_key(synthetic_val, model)


def test_int8_agrees_with_float32_on_the_real_sample(model, built, real_sample, assert_agrees_with_float32):
    data = CrackDataset(real_sample, split="all", progress=False).first(200)  # both classes, interleaved
    reference = extract_features(model, data, device="cpu", progress=False)
    images = torch.stack([data[i][0] for i in range(len(data))])
    rounded = type(reference)(built(images), reference.labels, reference.sample_ids, "int8")
    assert_agrees_with_float32(reference, rounded, "int8 on the real sample", min_cosine=0.98)


# ----------------------------------------------------------------------------- JPEGs decoded in batches
def test_jpeg_batches_give_the_data_sets_very_tensors(tmp_path, synthetic_val):
    batches = list(speed.jpeg_batches(synthetic_val, batch_size=7))
    assert [len(images) for images, _ in batches] == [7] * (len(synthetic_val) // 7) + [len(synthetic_val) % 7] * (
        len(synthetic_val) % 7 > 0
    )
    expected = torch.stack([synthetic_val[i][0] for i in range(len(synthetic_val))])
    assert torch.equal(torch.cat([images for images, _ in batches]), expected)  # bit for bit: the same cache key
    assert torch.cat([labels for _, labels in batches]).tolist() == [s.label for s in synthetic_val.samples]


def test_jpeg_batches_leave_other_images_and_transforms_to_the_data_set(tmp_path):
    root = generate_dataset(tmp_path / "data", per_class=3, seed=2, progress=False)
    Image.new("RGB", (300, 200), (90, 80, 70)).save(root / "Positive" / "00900.jpg")  # not 227x227
    Image.new("RGB", (227, 227), (90, 80, 70)).save(root / "Negative" / "00900.png")  # not a JPEG
    data = CrackDataset(root, split="all", progress=False)
    got = torch.cat([images for images, _ in speed.jpeg_batches(data)])
    assert torch.equal(got, torch.stack([data[i][0] for i in range(len(data))]))
    assert speed.jpeg_batches(CrackDataset(root, split="all", transform=lambda image: image, progress=False)) is None


def test_jpeg_batches_agree_with_the_real_sample(real_sample):
    data = CrackDataset(real_sample, split="all", progress=False).first(200)
    got = torch.cat([images for images, _ in speed.jpeg_batches(data)])
    assert torch.equal(got, torch.stack([data[i][0] for i in range(len(data))]))
