"""Tests for helpers.speed.int8 and the int8 choice of helpers.speed: faster, and the same predictions."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from torch import nn

import helpers.speed.int8 as int8_module
import helpers.speed.backbone as speed_module
from helpers.dataset import CrackDataset
from helpers.feature_cache import weights_fingerprint
from helpers.features import extract_features, feature_cache_key
from helpers.speed.int8 import (
    KNOWN_BAD_VERSIONS,
    ROUNDING_ERROR_RANGE,
    check_rounding,
    first_conv_8bit_unsafe_reason,
    fold_batchnorm,
    int8_unavailable_reason,
    int8_untested_reason,
)
from helpers.model import backbone_of, build_resnet18
from helpers.speed import (
    MEASURE_MIN_IMAGES,
    FastSettings,
    choose_backbone,
    choose_number_format,
    forget_built_backbones,
)
from helpers.speed.backbone import INT8_8BIT_CONV1, calibration_images
from helpers.speed.measure import Measurement, Trial, machine_key, remember
from helpers.synthetic_dataset import generate_dataset

FLOAT32 = FastSettings(bf16=False, int8=False)
INT8 = FastSettings(bf16=False, int8=True)
INT8_REASON = int8_unavailable_reason("cpu") or int8_untested_reason()
needs_int8 = pytest.mark.skipif(INT8_REASON is not None, reason=f"int8 cannot run here: {INT8_REASON}")


def uses_int8(settings: FastSettings, device: str, source_size: int | None = None) -> bool:
    return choose_number_format(settings, device, source_size).number_format == "int8"


@pytest.fixture(autouse=True)
def own_data_dir(tmp_path, monkeypatch):
    """No measurement remembered from elsewhere: each test decides in a data folder of its own."""
    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path / "data"))


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
def synthetic_split(tmp_path_factory, small_transform):
    root = generate_dataset(tmp_path_factory.mktemp("int8") / "data", per_class=50, seed=7, progress=False)
    return CrackDataset(root, split="all", transform=small_transform(), progress=False)


def extract(model, dataset, settings, cache_dir=None, **kwargs):
    return extract_features(
        model, dataset, cache_dir, settings=settings, device="cpu", num_workers=0, progress=False, **kwargs
    )


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


def test_calibration_images_are_synthetic_deterministic_and_transformed(small_transform):
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


def test_without_torchao_the_workbook_runs_in_float32_and_says_why(monkeypatch, model, synthetic_split, capsys):
    monkeypatch.setattr(int8_module, "torchao_version", lambda: None)  # as if torchao were not installed
    monkeypatch.setitem(sys.modules, "torchao", None)  # and importing it fails
    monkeypatch.setattr(synthetic_split, "source_size", MEASURE_MIN_IMAGES)
    assert "torchao is not installed" in int8_unavailable_reason("cpu")
    choice = choose_number_format(FastSettings(bf16=False), "cpu", MEASURE_MIN_IMAGES)
    assert choice.number_format == "float32" and "torchao is not installed" in choice.why
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        features = extract(model, synthetic_split, FastSettings(bf16=False))
    assert features.number_format == "float32"
    assert (
        "in float32 (bfloat16 turned off in the settings; int8 is off: torchao is not installed"
        in capsys.readouterr().out
    )


def test_torchao_that_cannot_be_imported_or_does_not_fit_torch_falls_back(monkeypatch):
    monkeypatch.setattr(int8_module, "torchao_version", lambda: "0.18.0")
    monkeypatch.setattr(int8_module, "torchao_import_error", lambda: "ImportError: undefined symbol")
    assert "cannot be imported" in int8_unavailable_reason("cpu") and "undefined symbol" in int8_unavailable_reason(
        "cpu"
    )
    ((torch_version, torchao_version),) = KNOWN_BAD_VERSIONS
    monkeypatch.setattr(int8_module.torch, "__version__", f"{torch_version[0]}.{torch_version[1]}.0")
    monkeypatch.setattr(int8_module, "torchao_version", lambda: f"{torchao_version[0]}.{torchao_version[1]}.0")
    assert "does not turn the graph into int8 kernels" in int8_unavailable_reason("cpu")
    monkeypatch.setattr(int8_module.torch, "__version__", "2.99.0")  # a pair nobody has measured
    assert "has not been checked" in int8_untested_reason()
    monkeypatch.setattr(int8_module, "int8_unavailable_reason", lambda device: None)
    monkeypatch.setattr(speed_module, "int8_unavailable_reason", lambda device: None)
    choice = choose_number_format(FastSettings(bf16=False), "cpu", MEASURE_MIN_IMAGES)
    assert choice.number_format == "float32" and "has not been checked" in choice.why  # auto does not build it
    assert uses_int8(FastSettings(bf16=False, int8=True), "cpu")  # asked for: it tries


def test_auto_never_builds_int8_for_small_folders_and_explicit_int8_says_why_not(monkeypatch, synthetic_split):
    size = synthetic_split.source_size
    assert size < MEASURE_MIN_IMAGES
    assert uses_int8(FastSettings(bf16=False), "cpu", size) is False  # too few images to pay
    assert uses_int8(FastSettings(bf16=False), "cpu", None) is False  # unknown: never built by surprise
    assert uses_int8(FastSettings(bf16=False), "cuda", MEASURE_MIN_IMAGES) is False
    monkeypatch.setenv("WORKBOOK_INT8", "0")
    assert "WORKBOOK_INT8=0" in choose_number_format(FastSettings(bf16=False), "cpu", MEASURE_MIN_IMAGES).why
    monkeypatch.delenv("WORKBOOK_INT8")
    assert choose_number_format(FLOAT32, "cpu", MEASURE_MIN_IMAGES).number_format == "float32"
    with pytest.raises(ValueError, match="not both"):
        uses_int8(FastSettings(bf16=True, int8=True), "cpu")
    monkeypatch.setattr(speed_module, "int8_unavailable_reason", lambda device: "no int8 on this test CPU")
    with pytest.raises(RuntimeError, match="no int8 on this test CPU"):
        uses_int8(INT8, "cpu")
    assert "no int8 on this test CPU" in choose_number_format(FastSettings(bf16=False), "cpu", MEASURE_MIN_IMAGES).why


def test_a_failed_int8_build_is_skipped_when_measuring_and_falls_back_with_a_warning_later(
    monkeypatch, model, synthetic_split, small_transform, capsys
):
    monkeypatch.setattr(speed_module, "int8_unavailable_reason", lambda device: None)
    monkeypatch.setattr(speed_module, "int8_untested_reason", lambda: None)

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler after all")

    monkeypatch.setattr(speed_module, "quantize_backbone", broken)
    forget_built_backbones()
    few = CrackDataset(synthetic_split.root, split="val", transform=small_transform(), progress=False)
    monkeypatch.setattr(few, "source_size", MEASURE_MIN_IMAGES)
    measured = extract(model, few, FastSettings(bf16=False))  # measures float32 and int8: int8 fails
    assert measured.number_format == "float32"
    assert "int8 skipped (failed: RuntimeError: no C++ compiler after all)" in capsys.readouterr().out
    # a measurement remembered from when int8 could be built: now the build fails, float32 takes over
    trials = [
        Trial("float32", rate=10.0),
        Trial("int8", rate=30.0, setup_seconds=20),
        Trial(INT8_8BIT_CONV1, rate=25.0),
    ]
    remember(Measurement(machine_key(), trials))
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
    forget_built_backbones()
    float32 = extract(model, synthetic_split, FLOAT32)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model.train()
    try:
        int8 = extract(model, synthetic_split, INT8, batch_size=32)
        untouched = model.training and all(torch.equal(before[n], t) for n, t in model.state_dict().items())
    finally:
        model.eval()
    return float32, int8, untouched


@needs_int8
def test_int8_predictions_agree_with_float32_on_synthetic_images(int8_and_float32, assert_agrees_with_float32):
    float32, int8, _ = int8_and_float32
    assert not torch.equal(float32.features, int8.features)  # it really ran in int8
    assert (float32.number_format, int8.number_format) == ("float32", "int8")
    assert int8.labels.tolist() == float32.labels.tolist() and int8.sample_ids == float32.sample_ids
    assert_agrees_with_float32(float32, int8, "int8", 0.98)


@needs_int8
def test_int8_features_have_their_own_cache_key_and_reuse_one_backbone(
    int8_and_float32, model, synthetic_split, tmp_path, monkeypatch
):
    float32, int8, _ = int8_and_float32
    assert int8.key != float32.key
    monkeypatch.setattr(speed_module, "quantize_backbone", lambda *a, **k: pytest.fail("built it twice"))
    again = extract(model, synthetic_split, INT8, batch_size=50, cache_dir=tmp_path)  # any batch size: same model
    assert torch.allclose(again.features, int8.features, atol=1e-5)
    loaded = extract(model, synthetic_split, INT8, batch_size=32, cache_dir=tmp_path)
    assert loaded.key == int8.key and loaded.number_format == "int8" and torch.equal(loaded.features, again.features)
    monkeypatch.setattr(speed_module, "recipe", lambda bits: int8_module.recipe(None))  # conv1 in float32
    assert feature_cache_key(synthetic_split, model, INT8, "cpu") != int8.key  # another recipe: computed again


@needs_int8
@pytest.mark.skipif(first_conv_8bit_unsafe_reason() is not None, reason="8-bit conv1 weights saturate on this CPU")
def test_a_measured_8_bit_first_convolution_is_built_keyed_and_agrees_with_float32(
    int8_and_float32, model, synthetic_split, small_transform, tmp_path, assert_agrees_with_float32, capsys
):
    """Where the measurement picked int8 with 8-bit first-convolution weights, that is what runs."""
    float32, int8, _ = int8_and_float32
    big = CrackDataset(synthetic_split.root, split="all", transform=small_transform(), progress=False)
    big.source_size = MEASURE_MIN_IMAGES
    rates = {"float32": 10.0, "bfloat16": 20.0, "bfloat16 compiled": 25.0, "int8": 30.0, INT8_8BIT_CONV1: 40.0}
    remember(Measurement(machine_key(), [Trial(name, rate=rate) for name, rate in rates.items()]))
    eight = extract(model, big, FastSettings(), tmp_path)
    assert f"building the {INT8_8BIT_CONV1} backbone" in capsys.readouterr().out
    assert eight.number_format == "int8" and eight.key not in (int8.key, float32.key)
    assert not torch.equal(eight.features, int8.features)  # other weights in the first convolution
    assert_agrees_with_float32(float32, eight, INT8_8BIT_CONV1, 0.98)


def test_first_conv_bits_must_be_7_8_or_none():
    with pytest.raises(ValueError, match="7, 8 or None"):
        int8_module.quantize_backbone(nn.Sequential(), torch.zeros(1, 3, 8, 8), first_conv_bits=4)


@needs_int8
def test_int8_backbone_pads_short_batches_and_splits_long_ones(
    int8_and_float32, model, synthetic_split, small_transform, monkeypatch
):
    monkeypatch.setattr(speed_module, "quantize_backbone", lambda *a, **k: pytest.fail("built it twice"))
    backbone = choose_backbone(model, "cpu", INT8, weights=weights_fingerprint(model))
    int8_backbone = backbone.prepare(synthetic_split.transform).run  # the one the fixture built
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
def test_int8_agrees_with_float32_on_the_real_sample(model, real_sample, assert_agrees_with_float32):
    dataset = CrackDataset(real_sample, split="val", progress=False)  # full-size images, default transform
    float32 = extract(model, dataset, FLOAT32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warnings on the int8 path
        int8 = extract(model, dataset, INT8)
    assert_agrees_with_float32(float32, int8, "int8", 0.98)


@needs_int8
def test_building_the_int8_backbone_leaves_the_model_alone(int8_and_float32):
    *_, untouched = int8_and_float32
    assert untouched, "building the int8 backbone changed the learner's model (its mode or its weights)"
