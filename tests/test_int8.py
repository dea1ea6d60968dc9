"""Tests for helpers.int8 and the int8 setting of helpers.features: faster, and the same predictions."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import helpers.features as features_module
import helpers.int8 as int8_module
from helpers.dataset import CrackDataset
from helpers.features import (
    INT8_MIN_IMAGES,
    FastSettings,
    backbone_of,
    extract_features,
    feature_cache_key,
    number_format,
    uses_int8,
)
from helpers.int8 import (
    ROUNDING_ERROR_RANGE,
    calibration_images,
    check_rounding,
    fold_batchnorm,
    int8_unavailable_reason,
)
from helpers.model import build_resnet18
from helpers.synthetic import generate_dataset
from test_features import assert_agrees_with_float32, small_transform

FLOAT32 = FastSettings(bf16=False, int8=False)
INT8 = FastSettings(bf16=False, int8=True)
needs_int8 = pytest.mark.skipif(int8_unavailable_reason("cpu") is not None,
                                reason=f"int8 cannot run here: {int8_unavailable_reason('cpu')}")


def model_with_trained_batchnorm(seed: int = 0) -> nn.Module:
    """A random ResNet18 whose BatchNorms hold non-trivial statistics, as trained ones do."""
    torch.manual_seed(seed)
    model = build_resnet18(weights=None)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return model_with_trained_batchnorm()


@pytest.fixture(scope="module")
def synthetic_split(tmp_path_factory):
    root = generate_dataset(tmp_path_factory.mktemp("int8") / "data", per_class=50, seed=7, progress=False)
    return CrackDataset(root, split="all", transform=small_transform(), progress=False)


def extract(model, dataset, settings, cache_dir=None, **kwargs):
    return extract_features(model, dataset, cache_dir, settings=settings, device="cpu", num_workers=0,
                            progress=False, **kwargs)


# ----------------------------------------------------------------------------- folding BatchNorm
def test_folding_batchnorm_keeps_the_numbers_and_the_model(model):
    backbone = backbone_of(model)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    folded = fold_batchnorm(backbone)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in folded.modules())
    images = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(folded(images), backbone(images), atol=1e-4, rtol=1e-4)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_folding_refuses_layers_it_does_not_know():
    with pytest.raises(ValueError, match="Dropout"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Dropout()))


def test_calibration_images_are_synthetic_deterministic_and_transformed():
    first, again = calibration_images(small_transform(), 6), calibration_images(small_transform(), 6)
    assert first.shape == (6, 3, 64, 64) and torch.equal(first, again)
    assert not torch.equal(first, calibration_images(small_transform(), 6, seed=1))
    assert calibration_images(None, 2).shape == (2, 3, 227, 227)  # None: the workbook's default transform


def test_the_rounding_check_refuses_broken_and_flags_unrounded_int8():
    torch.manual_seed(0)
    reference = torch.rand(4, 512)
    assert 0 < check_rounding(reference + 0.01 * torch.rand(4, 512), reference) < ROUNDING_ERROR_RANGE[1]
    with pytest.raises(RuntimeError, match="differ too much"):
        check_rounding(torch.rand(4, 512), reference)
    with pytest.raises(RuntimeError, match="differ too much"):
        check_rounding(torch.full((4, 512), float("nan")), reference)
    if int8_unavailable_reason("cpu") is None:  # the warning names torchao's version
        with pytest.warns(UserWarning, match="rounds nothing"):
            check_rounding(torch.ones(4, 256), torch.ones(4, 256))  # cosine exactly 1: nothing rounded


# ----------------------------------------------------------------------------- when int8 is used
def test_int8_needs_an_x86_cpu_torchao_and_a_compiler(monkeypatch):
    assert "CPU" in int8_unavailable_reason("cuda")
    monkeypatch.setattr(int8_module.platform, "machine", lambda: "arm64")
    assert "x86-64" in int8_unavailable_reason("cpu")


def test_auto_uses_int8_only_for_big_folders_and_explicit_int8_says_why_not(monkeypatch, synthetic_split):
    can = int8_unavailable_reason("cpu") is None
    assert synthetic_split.source_size < INT8_MIN_IMAGES
    assert uses_int8(FastSettings(bf16=False), "cpu", synthetic_split) is False  # too few images to pay
    monkeypatch.setattr(synthetic_split, "source_size", INT8_MIN_IMAGES)
    assert uses_int8(FastSettings(bf16=False), "cpu", synthetic_split) is can
    assert uses_int8(FastSettings(bf16=False), "cuda", synthetic_split) is False
    monkeypatch.setenv("WORKBOOK_INT8", "0")
    assert uses_int8(FastSettings(bf16=False), "cpu", synthetic_split) is False  # turned off by the learner
    monkeypatch.delenv("WORKBOOK_INT8")
    assert number_format(FLOAT32, "cpu", synthetic_split) == "float32"
    with pytest.raises(ValueError, match="not both"):
        uses_int8(FastSettings(bf16=True, int8=True), "cpu")
    monkeypatch.setattr(features_module, "int8_unavailable_reason", lambda device: "no int8 on this test CPU")
    with pytest.raises(RuntimeError, match="no int8 on this test CPU"):
        uses_int8(INT8, "cpu")
    assert uses_int8(FastSettings(bf16=False), "cpu", synthetic_split) is False


def test_a_failed_int8_build_falls_back_to_float32_with_a_warning(monkeypatch, model, synthetic_split):
    monkeypatch.setattr(synthetic_split, "source_size", INT8_MIN_IMAGES)
    monkeypatch.setattr(features_module, "int8_unavailable_reason", lambda device: None)

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler after all")
    monkeypatch.setattr(features_module, "quantize_backbone", broken)
    features_module._INT8_BACKBONES.clear()
    few = CrackDataset(synthetic_split.root, split="val", transform=small_transform(), progress=False)
    monkeypatch.setattr(few, "source_size", INT8_MIN_IMAGES)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler after all.*float32"):
        auto = extract(model, few, FastSettings(bf16=False))
    assert auto.key == feature_cache_key(few, model, FLOAT32, "cpu") and auto.number_format == "float32"
    assert torch.allclose(auto.features, extract(model, few, FLOAT32).features)
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):  # asked for int8 explicitly: no fallback
        extract(model, few, INT8)


# ----------------------------------------------------------------------------- the int8 backbone
@pytest.fixture(scope="module")
def int8_and_float32(model, synthetic_split):
    """The synthetic split's features in float32 and in int8 (one compilation for the module).

    The int8 features are extracted from a model left in training mode, to check that building
    the int8 copy changes neither its mode nor its weights.
    """
    features_module._INT8_BACKBONES.clear()
    float32 = extract(model, synthetic_split, FLOAT32)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model.train()
    try:
        int8 = extract(model, synthetic_split, INT8, batch_size=32)
        untouched = model.training and all(torch.equal(before[n], t) for n, t in model.state_dict().items())
    finally:
        model.eval()
    return float32, int8, untouched


def assert_int8_agrees(float32, int8):
    assert_agrees_with_float32(float32, int8, "int8", min_cosine=0.98)


@needs_int8
def test_int8_predictions_agree_with_float32_on_synthetic_images(int8_and_float32):
    float32, int8, _ = int8_and_float32
    assert not torch.equal(float32.features, int8.features)  # it really ran in int8
    assert (float32.number_format, int8.number_format) == ("float32", "int8")
    assert int8.labels.tolist() == float32.labels.tolist() and int8.sample_ids == float32.sample_ids
    assert_int8_agrees(float32, int8)


@needs_int8
def test_int8_features_have_their_own_cache_key_and_reuse_one_backbone(int8_and_float32, model, synthetic_split,
                                                                       tmp_path, monkeypatch):
    float32, int8, _ = int8_and_float32
    assert int8.key != float32.key
    monkeypatch.setattr(features_module, "quantize_backbone", lambda *a, **k: pytest.fail("built it twice"))
    again = extract(model, synthetic_split, INT8, batch_size=50, cache_dir=tmp_path)  # any batch size: same model
    assert torch.allclose(again.features, int8.features, atol=1e-5)
    loaded = extract(model, synthetic_split, INT8, batch_size=32, cache_dir=tmp_path)
    assert loaded.key == int8.key and loaded.number_format == "int8" and torch.equal(loaded.features, again.features)
    monkeypatch.setattr(features_module, "RECIPE", features_module.RECIPE.replace("7 bits", "8 bits"))
    assert feature_cache_key(synthetic_split, model, INT8, "cpu") != int8.key  # another recipe: computed again


def test_first_conv_bits_must_be_7_8_or_none():
    with pytest.raises(ValueError, match="7, 8 or None"):
        int8_module.quantize_backbone(nn.Sequential(), torch.zeros(1, 3, 8, 8), first_conv_bits=4)


@needs_int8
def test_int8_backbone_pads_short_batches_and_splits_long_ones(int8_and_float32, model):
    int8_backbone = next(iter(features_module._INT8_BACKBONES.values()))  # built by the fixture
    low, high = ROUNDING_ERROR_RANGE
    assert low < int8_backbone.rounding_error < high  # it really rounds, and not too much
    assert int8_backbone.chunk_size == 10
    images = calibration_images(small_transform(), 25, seed=3)
    with torch.inference_mode():
        whole = int8_backbone(images)  # 10 + 10 + 5 (padded)
        short = int8_backbone(images[:5])
    assert whole.shape == (25, 512) and short.shape == (5, 512)
    assert torch.allclose(short, whole[:5], atol=1e-5)


@needs_int8
def test_int8_agrees_with_float32_on_the_real_sample(model, tmp_path):
    source = os.environ.get("WORKBOOK_REAL_SAMPLE")
    if not source:
        pytest.skip("WORKBOOK_REAL_SAMPLE is not set")
    for cls in ("Positive", "Negative"):  # link, never copy, the real sample
        (tmp_path / cls).symlink_to(Path(source) / cls, target_is_directory=True)
    dataset = CrackDataset(tmp_path, split="val", progress=False)  # full-size images, default transform
    float32 = extract(model, dataset, FLOAT32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warnings on the int8 path
        int8 = extract(model, dataset, INT8)
    assert_int8_agrees(float32, int8)


@needs_int8
def test_building_the_int8_backbone_leaves_the_model_alone(int8_and_float32):
    *_, untouched = int8_and_float32
    assert untouched, "building the int8 backbone changed the learner's model (its mode or its weights)"
