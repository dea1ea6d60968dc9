"""Tests for helpers.features: cached features give the same model, and the cache knows when it is stale."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import helpers.speed.workers as workers_module
from helpers.dataset import CrackDataset
from helpers.folder_dataset import FolderDataset
from helpers.feature_cache import FeatureSet
from helpers.features import cache_name, extract_features, feature_cache_key, features_for
from helpers.inference import logits_from_features
from helpers.model import backbone_of, build_resnet18
from helpers.settings import feature_cache_dir
from helpers.speed import (
    Backbone,
    FastSettings,
    bf16_is_fast,
    choose_backbone,
    choose_number_format,
    default_num_workers,
)
from helpers.synthetic_dataset import generate_dataset

FLOAT32 = FastSettings(channels_last=True, bf16=False)
BF16 = FastSettings(channels_last=True, bf16=True)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synthetic") / "data", per_class=8, seed=3, progress=False)


@pytest.fixture
def copy_root(tmp_path, synthetic_root) -> Path:
    """A private copy of the synthetic set, for tests that add or change files."""
    for cls in ("Positive", "Negative"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for file in (synthetic_root / cls).iterdir():
            (tmp_path / "data" / cls / file.name).write_bytes(file.read_bytes())
    return tmp_path / "data"


def fake_backbone(calls: list):
    """Stands in for Backbone.__call__ in cache tests: records each call, returns numbered features."""

    def fake(backbone, images):
        calls.append(len(images))
        return torch.arange(len(images) * 512, dtype=torch.float32).reshape(len(images), 512)

    return fake


def no_backbone(*args, **kwargs):
    raise AssertionError("the backbone ran although the features were cached")


def float32_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The backbone's float32 features of a batch, through the workbook's one door."""
    return choose_backbone(model, "cpu", FLOAT32).prepare()(images)


def extract(model, dataset, cache_dir, settings=FLOAT32, **kwargs) -> FeatureSet:
    return extract_features(
        model, dataset, cache_dir, settings=settings, device="cpu", num_workers=0, progress=False, **kwargs
    )


# ----------------------------------------------------------------------------- your own classes, any size
def test_features_of_a_folder_dataset_with_mixed_sizes(model, tmp_path):
    """Notebook 06's "your own classes" with photos that are not 227x227 (issue item 8)."""
    sizes = {"crack": [(227, 227), (300, 200)], "stain": [(640, 480), (100, 150)]}
    for name, shapes in sizes.items():
        (tmp_path / name).mkdir()
        for i, (width, height) in enumerate(shapes):
            pixels = np.random.default_rng([i, width]).integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i:05d}.jpg")
    dataset = FolderDataset(tmp_path, split="all")
    feature_set = extract(model, dataset, tmp_path / "cache", batch_size=4)
    assert feature_set.features.shape == (4, 512)
    assert feature_set.sample_ids == ["crack/00000.jpg", "stain/00000.jpg", "crack/00001.jpg", "stain/00001.jpg"]


# ----------------------------------------------------------------------------- the same model
def test_backbone_of_shares_layers_and_gives_512_features(model):
    backbone = backbone_of(model)
    assert backbone[0] is model.conv1 and not any(layer is model.fc for layer in backbone)
    out = float32_features(model, torch.randn(3, 3, 64, 64))
    assert out.shape == (3, 512) and out.dtype == torch.float32 and out.device.type == "cpu"


def test_a_model_in_training_mode_still_gives_eval_mode_features(model):
    """BatchNorm in training mode would use each batch's statistics: the backbone always runs in eval mode."""
    training = build_resnet18(weights=None)
    training.load_state_dict(model.state_dict())
    training.train()
    images = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        expected = backbone_of(model)(images)  # `model` is in eval mode
        one_image = float32_features(training, images[:1])
    assert torch.allclose(float32_features(training, images), expected, atol=1e-5)
    assert torch.allclose(one_image, expected[:1], atol=1e-5)  # an image's features do not depend on its batch
    assert training.training  # the learner's model keeps its mode


def test_on_a_cpu_the_float_backbone_runs_eight_images_at_a_time(model):
    """Small chunks keep the activations in the CPU's cache (helpers.speed.int8.InChunks); the features stay the same."""
    backbone = choose_backbone(model, "cpu", FLOAT32).prepare()
    seen = []
    layer = backbone.run.run[0]  # the copy's first convolution
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    images = torch.randn(25, 3, 64, 64)
    try:
        features = backbone(images)
    finally:
        handle.remove()
    assert seen == [8, 8, 8, 1]
    with torch.inference_mode():
        expected = backbone_of(model)(images)
    assert torch.allclose(features, expected, atol=1e-5)


def test_cached_path_equals_direct_path(model, synthetic_root, tmp_path):
    dataset = CrackDataset(synthetic_root, split="all", progress=False)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.inference_mode():
        direct = model(images)  # float32, contiguous, the whole model at once
    computed = extract(model, dataset, tmp_path)
    loaded = extract(model, dataset, tmp_path)  # the same numbers back from the cache file
    for feature_set in (computed, loaded):
        assert torch.allclose(logits_from_features(model.fc, feature_set.features), direct, atol=1e-4, rtol=1e-4)
    assert torch.equal(computed.features, loaded.features)
    assert next(model.parameters()).is_contiguous()  # the learner's model was not converted


def test_feature_set_shapes_labels_and_order(model, synthetic_root, small_transform):
    dataset = CrackDataset(synthetic_root, split="train", transform=small_transform(), progress=False)
    feature_set = extract_features(
        model, dataset, None, settings=FLOAT32, device="cpu", batch_size=5, num_workers=1, progress=False
    )  # a worker keeps the order
    assert len(feature_set) == len(dataset) == 12
    assert feature_set.features.shape == (12, 512) and feature_set.features.dtype == torch.float32
    assert feature_set.labels.dtype == torch.int64
    assert torch.equal(feature_set.labels, dataset.labels())
    assert feature_set.labels.tolist()[:4] == [1, 0, 1, 0]
    assert feature_set.sample_ids == [sample.sample_id for sample in dataset.samples]
    one_by_one = torch.cat([float32_features(model, dataset[i][0][None]) for i in (0, 7)])
    assert torch.allclose(feature_set.features[[0, 7]], one_by_one, atol=1e-4)
    assert len(feature_set.tensor_dataset()) == 12


# ----------------------------------------------------------------------------- bfloat16
def test_bf16_agrees_with_float32_on_synthetic_images(model, tmp_path, small_transform, assert_agrees_with_float32):
    root = generate_dataset(tmp_path / "data", per_class=32, seed=5, progress=False)
    dataset = CrackDataset(root, split="all", transform=small_transform(), progress=False)
    assert_agrees_with_float32(
        extract(model, dataset, None, FLOAT32), extract(model, dataset, None, BF16), "bf16", 0.99
    )


def test_bf16_agrees_with_float32_on_the_real_sample(model, real_sample, small_transform, assert_agrees_with_float32):
    dataset = CrackDataset(real_sample, split="val", transform=small_transform(), progress=False)
    assert_agrees_with_float32(
        extract(model, dataset, None, FLOAT32), extract(model, dataset, None, BF16), "bf16", 0.99
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_features_match_cpu(model, synthetic_root):
    dataset = CrackDataset(synthetic_root, split="all", progress=False)
    cpu = extract(model, dataset, None)
    for settings in (FLOAT32, FastSettings()):  # float32 (TF32 convolutions), then auto: bf16 on recent GPUs
        gpu = extract_features(model, dataset, None, settings=settings, device="cuda", progress=False)
        assert gpu.features.device.type == "cpu" and gpu.sample_ids == cpu.sample_ids
        assert nn.functional.cosine_similarity(gpu.features, cpu.features, dim=1).min() > 0.99
    assert next(model.parameters()).device.type == "cpu"  # the learner's model stayed where it was


def test_explicit_bf16_and_small_folders_are_not_measured():
    assert isinstance(bf16_is_fast("cpu"), bool)
    assert bf16_is_fast("meta") is False
    assert choose_number_format(FastSettings(bf16=True), "cpu").number_format == "bfloat16"
    small = choose_number_format(FastSettings(), "cpu", 100, lambda names: pytest.fail("measured 100 images"))
    assert small.number_format == "float32" and "too few" in small.why


# ----------------------------------------------------------------------------- the cache
def test_cache_miss_then_hit(model, copy_root, tmp_path, monkeypatch, capsys):
    dataset = CrackDataset(copy_root, split="all", progress=False)
    calls = []
    monkeypatch.setattr(Backbone, "__call__", fake_backbone(calls))
    first = extract(model, dataset, tmp_path / "cache", batch_size=10)
    assert calls == [10, 6]  # a miss: every batch went through the backbone
    path = tmp_path / "cache" / "data-all.pt"  # named after the data set's folder and split
    assert cache_name(dataset) == "data-all" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["data-all.pt"]  # no temporary file left behind

    monkeypatch.setattr(Backbone, "__call__", no_backbone)
    capsys.readouterr()
    second = extract(model, dataset, tmp_path / "cache", batch_size=10)
    assert f"features loaded from cache: {path}" in capsys.readouterr().out
    assert torch.equal(second.features, first.features) and second.key == first.key
    assert second.sample_ids == first.sample_ids and torch.equal(second.labels, first.labels)


def test_a_dedupe_split_has_its_own_cache_file(copy_root):
    names = {
        cache_name(CrackDataset(copy_root, split, dedupe=dedupe, progress=False))
        for split in ("train", "val")
        for dedupe in (False, True)
    }
    assert names == {"data-train", "data-val", "data-train-dedupe", "data-val-dedupe"}


def test_cache_name_picks_the_file(model, copy_root, tmp_path, monkeypatch):
    dataset = CrackDataset(copy_root, split="all", progress=False)
    monkeypatch.setattr(Backbone, "__call__", fake_backbone([]))
    extract(model, dataset, tmp_path / "cache", name="synthetic_all")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["synthetic_all.pt"]


def key_of(model, dataset, settings=FLOAT32) -> str:
    return feature_cache_key(dataset, model, settings, device="cpu")


def test_key_changes_with_files(model, copy_root):
    before = key_of(model, CrackDataset(copy_root, split="all", progress=False))
    assert key_of(model, CrackDataset(copy_root, split="all", progress=False)) == before  # stable
    assert key_of(model, CrackDataset(copy_root, split="train", progress=False)) != before

    changed = copy_root / "Positive" / "00003.jpg"
    changed.write_bytes(changed.read_bytes() + b"\0")  # one more byte: a new size
    after_change = key_of(model, CrackDataset(copy_root, split="all", progress=False))
    assert after_change != before

    (copy_root / "Negative" / "09999.jpg").write_bytes((copy_root / "Negative" / "00001.jpg").read_bytes())
    assert key_of(model, CrackDataset(copy_root, split="all", progress=False)) not in (before, after_change)


def test_key_changes_with_weights_transform_and_bf16(model, copy_root, small_transform):
    dataset = CrackDataset(copy_root, split="all", progress=False)
    before = key_of(model, dataset)
    smaller = CrackDataset(copy_root, split="all", transform=small_transform(), progress=False)
    assert key_of(model, smaller) != before
    assert key_of(model, dataset, BF16) != before
    assert key_of(model, dataset, FastSettings(channels_last=False, bf16=False)) == before  # same numbers

    retrained_head = build_resnet18(weights=None)
    retrained_head.load_state_dict(model.state_dict())
    nn.init.zeros_(retrained_head.fc.weight)  # only fc differs: the features are the same
    assert key_of(retrained_head, dataset) == before

    perturbed = build_resnet18(weights=None)
    perturbed.load_state_dict(model.state_dict())
    with torch.no_grad():
        perturbed.layer3[0].conv1.weight[0, 0, 0, 0] += 1e-3
    assert key_of(perturbed, dataset) != before


def test_stale_cache_recomputed(model, copy_root, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(Backbone, "__call__", fake_backbone(calls))
    cache = tmp_path / "cache"
    extract(model, CrackDataset(copy_root, split="all", progress=False), cache)
    new_file = copy_root / "Positive" / "09999.jpg"
    new_file.write_bytes((copy_root / "Positive" / "00001.jpg").read_bytes())
    grown = extract(model, CrackDataset(copy_root, split="all", progress=False), cache)
    assert calls == [16, 17] and len(grown) == 17
    assert "Positive/09999.jpg" in grown.sample_ids
    extract(model, CrackDataset(copy_root, split="all", progress=False), cache, settings=BF16)
    assert calls == [16, 17, 17]
    assert torch.load(cache / "data-all.pt", weights_only=True)["key"] == key_of(
        model, CrackDataset(copy_root, split="all", progress=False), BF16
    )


def bmp_bytes(seed: int) -> bytes:
    """A 227x227 noise image as BMP: every such file has the same size, whatever its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (227, 227, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="BMP")
    return buffer.getvalue()


def test_a_same_size_edit_with_the_old_mtime_recomputes_the_features(model, tmp_path, monkeypatch):
    """The key hashes the files' bytes: size and modification time alone would serve stale features (item 9)."""
    root = tmp_path / "data"
    for class_index, cls in enumerate(("Positive", "Negative")):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            (root / cls / f"{i:05d}.bmp").write_bytes(bmp_bytes(10 * class_index + i))
    calls = []
    monkeypatch.setattr(Backbone, "__call__", fake_backbone(calls))
    first = extract(model, CrackDataset(root, split="all", progress=False), tmp_path / "cache")
    extract(model, CrackDataset(root, split="all", progress=False), tmp_path / "cache")
    assert calls == [4]  # the second call was served from the cache

    edited = root / "Positive" / "00001.bmp"
    before = edited.stat()
    edited.write_bytes(bmp_bytes(99))
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (edited.stat().st_size, edited.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    second = extract(model, CrackDataset(root, split="all", progress=False), tmp_path / "cache")
    assert calls == [4, 4] and second.key != first.key


@pytest.mark.parametrize("content", [b"", b"not a torch file at all", "missing_labels", "wrong_length"])
def test_corrupt_cache_is_a_miss_with_a_warning(model, copy_root, tmp_path, monkeypatch, content):
    dataset = CrackDataset(copy_root, split="all", progress=False)
    path = tmp_path / "cache" / "data-all.pt"
    path.parent.mkdir()
    if content == "missing_labels":
        torch.save({"key": "x", "features": torch.zeros(3, 512)}, path)
    elif content == "wrong_length":
        key = feature_cache_key(dataset, model, FLOAT32, device="cpu")  # the right key, damaged arrays
        torch.save(
            {
                "key": key,
                "features": torch.zeros(16, 512),
                "labels": torch.zeros(15, dtype=torch.long),
                "sample_ids": [s.sample_id for s in dataset.samples],
            },
            path,
        )
    else:
        path.write_bytes(content)
    calls = []
    monkeypatch.setattr(Backbone, "__call__", fake_backbone(calls))
    with pytest.warns(UserWarning, match="unreadable"):
        rewritten = extract(model, dataset, tmp_path / "cache")
    assert calls == [16]
    monkeypatch.setattr(Backbone, "__call__", no_backbone)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(extract(model, dataset, tmp_path / "cache").features, rewritten.features)
    assert [p.name for p in path.parent.iterdir()] == ["data-all.pt"]


def test_failed_save_warns_and_leaves_no_temporary_file(model, copy_root, tmp_path, monkeypatch):
    monkeypatch.setattr(Backbone, "__call__", fake_backbone([]))

    def broken_save(obj, file):
        Path(file).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.warns(UserWarning, match="disk full"):
        feature_set = extract(model, CrackDataset(copy_root, split="all", progress=False), tmp_path / "cache")
    assert len(feature_set) == 16  # the computed features are returned all the same
    assert list((tmp_path / "cache").iterdir()) == []


def test_defaults():
    assert feature_cache_dir().parts[-2:] == ("cache", "features")
    workers = default_num_workers()
    assert 0 <= workers <= 4 and (workers == 0 or workers < (os.cpu_count() or 1))
    assert workers <= default_num_workers("cuda") <= 8


@pytest.mark.parametrize("cores, cpu, gpu", [(1, 0, 0), (2, 0, 1), (4, 0, 3), (8, 1, 7), (16, 2, 8), (64, 4, 8)])
def test_cpus_decode_in_the_main_process_until_eight_cores(monkeypatch, cores, cpu, gpu):
    monkeypatch.setattr(workers_module.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert (default_num_workers("cpu"), default_num_workers("cuda")) == (cpu, gpu)


def test_features_for_another_split_are_the_same_rows_by_sample_id():
    train = FeatureSet(
        torch.arange(6.0).repeat(512, 1).T, torch.tensor([0, 1, 0, 1, 0, 1]), [f"t{i}" for i in range(6)], "train-key"
    )
    val = FeatureSet(torch.full((2, 512), 9.0), torch.tensor([1, 0]), ["v0", "v1"], "val-key")

    class Split:  # what features_for reads of a data set: its samples' ids, in order
        def __init__(self, ids):
            self.samples = [type("Sample", (), {"sample_id": i})() for i in ids]

    picked = features_for(Split(["v1", "t4", "t0"]), train, val)
    assert picked.sample_ids == ["v1", "t4", "t0"] and picked.labels.tolist() == [0, 0, 0]
    assert picked.features[:, 0].tolist() == [9.0, 4.0, 0.0] and picked.number_format == "float32"
    with pytest.raises(ValueError, match="1 images of this data set have no features here \\(first: t9\\)"):
        features_for(Split(["t0", "t9"]), train, val)
    val.number_format = "int8"
    with pytest.raises(ValueError, match="different number formats"):
        features_for(Split(["t0"]), train, val)


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
        OSError(28, "No space left on device"),
    ],
    ids=["torch-runtime-error", "enospc"],
)
def test_a_full_disk_keeps_the_features_and_says_where_and_how_much(model, copy_root, tmp_path, monkeypatch, failure):
    monkeypatch.setattr(Backbone, "__call__", fake_backbone([]))

    def full_disk(obj, file):
        raise failure

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.warns(UserWarning) as warned:
        feature_set = extract(model, CrackDataset(copy_root, split="all", progress=False), tmp_path / "cache")
    assert len(feature_set) == 16 and feature_set.features.shape == (16, 512)  # computed and returned
    message = str(warned[-1].message)
    assert (
        f"The disk holding {tmp_path / 'cache'}" in message and "needs about 32.9 kB" in message
    )  # 16 x 512 x 4 + 16 x 8
    assert "carries on" in message
