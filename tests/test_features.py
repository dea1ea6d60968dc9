"""Tests for helpers.features: cached features give the same model, and the cache knows when it is stale."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import helpers.features as features_module
from helpers.dataset import CrackDataset
from helpers.features import FeatureSet, cache_name, extract_features, feature_cache_key, features_for
from helpers.dataset import FolderDataset
from helpers.model import backbone_of, build_resnet18
from helpers.synthetic_dataset import generate_dataset


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


@pytest.fixture
def counted(monkeypatch) -> list[int]:
    """Replaces the backbone by one that records each batch's size and returns numbered features."""
    calls: list[int] = []

    def fake(images):
        calls.append(len(images))
        return torch.arange(len(images) * 512, dtype=torch.float32).reshape(len(images), 512)

    monkeypatch.setattr(features_module.speed, "backbone_for", lambda model, device, chosen: (fake, "float32"))
    return calls


def extract(model, dataset, cache_dir=None, **kwargs) -> FeatureSet:
    return extract_features(model, dataset, cache_dir, device="cpu", progress=False, **kwargs)


def dataset(root: Path, split: str = "all", **kwargs) -> CrackDataset:
    return CrackDataset(root, split=split, progress=False, **kwargs)


# ----------------------------------------------------------------------------- the same model
def test_head_on_cached_features_is_the_model(model, synthetic_root):
    """fc(features) is model(x): the cached path computes what the whole network computes."""
    data = dataset(synthetic_root, "val")
    feature_set = extract(model, data, batch_size=3)
    images = torch.stack([data[i][0] for i in range(len(data))])
    with torch.no_grad():
        direct = model.eval()(images)
        cached = model.fc(feature_set.features)
    assert feature_set.features.shape == (len(data), 512) and feature_set.number_format == "float32"
    assert feature_set.sample_ids == [s.sample_id for s in data.samples]
    assert feature_set.labels.tolist() == [s.label for s in data.samples]
    torch.testing.assert_close(cached, direct, rtol=1e-4, atol=1e-4)


def test_a_model_in_training_mode_gives_eval_mode_features_and_stays_in_training_mode(model, synthetic_root):
    training = build_resnet18(weights=None)
    training.load_state_dict(model.state_dict())
    training.train()
    data = dataset(synthetic_root, "val")
    with torch.no_grad():
        expected = backbone_of(model.eval())(torch.stack([data[0][0]]))
    one = extract(training, data.first(1))
    torch.testing.assert_close(one.features, expected, rtol=1e-4, atol=1e-4)
    assert training.training and training.bn1.training  # the learner's model is left as it was


def test_features_of_your_own_classes_with_mixed_sizes(model, tmp_path):
    """Notebook 06's "your own classes", photos that are not 227x227."""
    for name, shapes in {"crack": [(227, 227), (300, 200)], "stain": [(640, 480), (100, 150)]}.items():
        (tmp_path / name).mkdir()
        for i, (width, height) in enumerate(shapes):
            pixels = np.random.default_rng([i, width]).integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i:05d}.jpg")
    feature_set = extract(model, FolderDataset(tmp_path, split="all"), tmp_path / "cache", batch_size=4)
    assert feature_set.features.shape == (4, 512)
    assert feature_set.sample_ids == ["crack/00000.jpg", "stain/00000.jpg", "crack/00001.jpg", "stain/00001.jpg"]


# ----------------------------------------------------------------------------- the cache
def test_cache_miss_then_hit(model, copy_root, tmp_path, counted, capsys):
    first = extract(model, dataset(copy_root), tmp_path / "cache", batch_size=10)
    assert counted == [10, 6]  # a miss: every batch went through the backbone
    path = tmp_path / "cache" / "data-all.pt"  # named after the data set's folder and split
    assert [p.name for p in path.parent.iterdir()] == ["data-all.pt"]  # no temporary file left behind
    capsys.readouterr()
    second = extract(model, dataset(copy_root), tmp_path / "cache", batch_size=10)
    assert counted == [10, 6] and f"features loaded from the cache: {path}" in capsys.readouterr().out
    assert torch.equal(second.features, first.features) and second.sample_ids == first.sample_ids
    assert torch.equal(second.labels, first.labels)


def test_each_split_has_its_own_cache_file(copy_root):
    names = {cache_name(dataset(copy_root, split, dedupe=dedupe)) for split in ("train", "val") for dedupe in (0, 1)}
    assert names == {"data-train", "data-val", "data-train-dedupe", "data-val-dedupe"}


def test_the_key_changes_with_files_split_transform_weights_and_format_not_with_the_head(model, copy_root):
    before = feature_cache_key(dataset(copy_root), model)
    assert feature_cache_key(dataset(copy_root), model) == before
    assert feature_cache_key(dataset(copy_root, "train"), model) != before
    assert feature_cache_key(dataset(copy_root), model, "int8") != before
    resized = dataset(copy_root, transform=lambda image: torch.zeros(3, 8, 8))
    assert feature_cache_key(resized, model) != before

    other_head = build_resnet18(weights=None)
    other_head.load_state_dict(model.state_dict())
    nn.init.zeros_(other_head.fc.weight)  # only fc differs: the features are the same
    assert feature_cache_key(dataset(copy_root), other_head) == before
    with torch.no_grad():
        other_head.layer3[0].bn1.running_mean[0] += 1e-3  # one BatchNorm statistic
    assert feature_cache_key(dataset(copy_root), other_head) != before

    changed = copy_root / "Positive" / "00003.jpg"
    changed.write_bytes(changed.read_bytes() + b"\0")  # an edited file: a new size
    after_edit = feature_cache_key(dataset(copy_root), model)
    os.utime(changed, ns=(0, changed.stat().st_mtime_ns + 10**9))  # touched: a new modification time
    touched = feature_cache_key(dataset(copy_root), model)
    (copy_root / "Negative" / "09999.jpg").write_bytes((copy_root / "Negative" / "00001.jpg").read_bytes())
    assert len({before, after_edit, touched, feature_cache_key(dataset(copy_root), model)}) == 4


def test_a_stale_cache_is_recomputed(model, copy_root, tmp_path, counted):
    extract(model, dataset(copy_root), tmp_path / "cache")
    (copy_root / "Positive" / "09999.jpg").write_bytes((copy_root / "Positive" / "00001.jpg").read_bytes())
    grown = extract(model, dataset(copy_root), tmp_path / "cache")
    assert counted == [16, 17] and "Positive/09999.jpg" in grown.sample_ids


@pytest.mark.parametrize("content", [b"", b"not a torch file at all", "missing_labels"])
def test_a_corrupt_cache_is_a_miss_with_a_warning(model, copy_root, tmp_path, counted, content):
    path = tmp_path / "cache" / "data-all.pt"
    path.parent.mkdir()
    if content == "missing_labels":
        torch.save({"key": feature_cache_key(dataset(copy_root), model), "features": torch.zeros(3, 512)}, path)
    else:
        path.write_bytes(content)
    with pytest.warns(UserWarning, match="is damaged or does not fit the data set") as warned:
        rewritten = extract(model, dataset(copy_root), tmp_path / "cache")
    assert {w.filename for w in warned if "recomputing" in str(w.message)} == {__file__}
    assert counted == [16]
    assert torch.equal(extract(model, dataset(copy_root), tmp_path / "cache").features, rewritten.features)
    assert counted == [16] and [p.name for p in path.parent.iterdir()] == ["data-all.pt"]


EDITS = {  # issue 29, item 10: a file whose key fits and whose content does not
    "labels out of range": lambda cache: {"labels": cache["labels"] + 2},
    "labels as floats": lambda cache: {"labels": cache["labels"].float()},
    "features not (N, 512)": lambda cache: {"features": cache["features"][:, :511]},
    "features not float": lambda cache: {"features": cache["features"].long()},
    "features not a tensor": lambda cache: {"features": cache["features"].tolist()},
    "a row too few": lambda cache: {"features": cache["features"][1:]},
    "a label too many": lambda cache: {"labels": torch.cat([cache["labels"], cache["labels"][:1]])},
    "other sample ids": lambda cache: {"sample_ids": cache["sample_ids"][::-1]},
    "a NaN": lambda cache: {"features": cache["features"].index_fill(0, torch.tensor([3]), float("nan"))},
    "another number format": lambda cache: {"number_format": "int8"},
}


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_a_cache_whose_content_does_not_fit_the_data_set_is_a_miss(model, copy_root, tmp_path, counted, edit):
    good = extract(model, dataset(copy_root), tmp_path / "cache")
    path = tmp_path / "cache" / "data-all.pt"
    stored = torch.load(path, weights_only=True)
    torch.save(stored | edit(stored), path)
    with pytest.warns(UserWarning, match="does not fit the data set"):
        recomputed = extract(model, dataset(copy_root), tmp_path / "cache")
    assert counted == [16, 16] and recomputed.labels.tolist() == good.labels.tolist()
    assert torch.equal(extract(model, dataset(copy_root), tmp_path / "cache").features, good.features)
    assert counted == [16, 16]  # the file was overwritten with what fits


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), RuntimeError("unexpected pos 64 vs 0")])
def test_a_failed_save_keeps_the_features_warns_and_leaves_no_file(model, copy_root, tmp_path, counted, failure):
    def broken_save(obj, file):
        Path(file).write_bytes(b"half a file")
        raise failure

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "save", broken_save)
        with pytest.warns(UserWarning, match="not cached in") as warned:
            feature_set = extract(model, dataset(copy_root), tmp_path / "cache")
    assert {w.filename for w in warned if "not cached" in str(w.message)} == {__file__}  # the caller's line shows
    assert feature_set.features.shape == (16, 512)
    assert list((tmp_path / "cache").iterdir()) == []


def test_features_for_another_split_are_the_same_rows_by_sample_id():
    train = FeatureSet(torch.arange(6.0).repeat(512, 1).T, torch.tensor([0, 1] * 3), [f"t{i}" for i in range(6)])
    val = FeatureSet(torch.full((2, 512), 9.0), torch.tensor([1, 0]), ["v0", "v1"])

    class Split:  # what features_for reads of a data set: its samples' ids, in order
        def __init__(self, ids):
            self.samples = [type("Sample", (), {"sample_id": i})() for i in ids]

    picked = features_for(Split(["v1", "t4", "t0"]), train, val)
    assert picked.sample_ids == ["v1", "t4", "t0"] and picked.labels.tolist() == [0, 0, 0]
    assert picked.features[:, 0].tolist() == [9.0, 4.0, 0.0]
    with pytest.raises(ValueError, match=r"1 images have no features here \(first: t9\)"):
        features_for(Split(["t0", "t9"]), train, val)
    val.number_format = "int8"
    with pytest.raises(ValueError, match="different number formats"):
        features_for(Split(["t0"]), train, val)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")
def test_features_on_a_gpu_match_the_cpus(model, synthetic_root):
    data = dataset(synthetic_root, "val")
    on_gpu = extract_features(model, data, device="cuda", progress=False)
    torch.testing.assert_close(on_gpu.features, extract(model, data).features, rtol=1e-3, atol=1e-3)
