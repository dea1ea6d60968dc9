"""Tests for helpers.synthetic and helpers.synthetic_dataset: the offline stand-in for the concrete crack photos."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from helpers import synthetic, synthetic_dataset
from helpers.settings import SOURCE_FILE
from helpers.synthetic_dataset import generate_dataset, image_statistics, read_manifest

HARD_KINDS = {"stain", "shadow", "pores", "scratch"}


def make(dest: Path, **kwargs) -> Path:
    """generate_dataset with a small default size and no progress bar."""
    return generate_dataset(dest, **{"per_class": 8, "progress": False, **kwargs})


def file_hashes(folder: Path) -> dict[str, str]:
    """{"Positive/00001.jpg": md5, ...} for every JPEG under folder."""
    return {
        f"{f.parent.name}/{f.name}": hashlib.md5(f.read_bytes()).hexdigest() for f in sorted(folder.glob("*/*.jpg"))
    }


def leftovers(parent: Path) -> list[str]:
    """Hidden temporary or old folders that generate_dataset should never leave behind."""
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return make(tmp_path_factory.mktemp("small") / "synthetic", per_class=12, seed=3)


# ----------------------------------------------------------------------------- the data set
def test_laid_out_like_the_real_set_with_a_manifest(small_set):
    assert sorted(p.name for p in small_set.iterdir()) == [
        "Negative",
        "Positive",
        "synthetic_manifest.csv",
        SOURCE_FILE,
    ]
    for folder in ("Positive", "Negative"):
        assert sorted(p.name for p in (small_set / folder).iterdir()) == [f"{i:05d}.jpg" for i in range(1, 13)]
    for path in small_set.glob("*/*.jpg"):
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (227, 227))
    kinds = read_manifest(small_set)
    assert sorted(kinds) == sorted(file_hashes(small_set))  # every file, by sample id
    assert {kind for name, kind in kinds.items() if name.startswith("Positive/")} == {"crack"}
    assert {kind for name, kind in kinds.items() if name.startswith("Negative/")} <= HARD_KINDS | {"plain"}
    assert json.loads((small_set / SOURCE_FILE).read_text())["source"] == "synthetic"  # what helpers.data looks for
    assert read_manifest(small_set / "Positive") == {}  # real data: no manifest


def test_same_seed_same_bytes_whatever_per_class(tmp_path):
    first = file_hashes(make(tmp_path / "a", seed=11))
    assert file_hashes(make(tmp_path / "b", seed=11, progress=True)) == first
    other = file_hashes(make(tmp_path / "c", seed=12))
    assert all(first[name] != other[name] for name in first)
    longer = file_hashes(make(tmp_path / "long", seed=11, per_class=9, duplicate_fraction=0))
    shorter = file_hashes(make(tmp_path / "short", seed=11, per_class=4, duplicate_fraction=0))
    assert all(longer[name] == digest for name, digest in shorter.items())


@pytest.mark.parametrize("fraction, expected", [(0.25, (10, 10)), (None, (1, 3)), (0, (0, 0))])
def test_duplicates_at_the_requested_fraction(tmp_path, fraction, expected):
    dest = make(tmp_path / "dups", per_class=40, duplicate_fraction=fraction)
    rows = [line.split(",") for line in (dest / "synthetic_manifest.csv").read_text().splitlines()[1:]]
    for folder, n_copies in zip(("Positive", "Negative"), expected):  # 1.5% and 6.5% of 40, rounded, by default
        hashes = [hashlib.md5(p.read_bytes()).hexdigest() for p in sorted((dest / folder).glob("*.jpg"))]
        assert len(hashes) - len(set(hashes)) == n_copies
        copies = {name: original for kind, name, _, original in rows if kind == folder and original}
        assert len(copies) == n_copies and not set(copies.values()) & set(copies)  # copies of originals only
        assert all((dest / folder / a).read_bytes() == (dest / folder / b).read_bytes() for a, b in copies.items())


def test_bad_settings_are_refused_before_anything_is_written(tmp_path):
    for settings in ({"duplicate_fraction": 0.9}, {"per_class": 0}, {"classes": {"Positive": "pothole"}}):
        with pytest.raises(ValueError):
            make(tmp_path / "bad", **settings)
    with pytest.raises(ValueError, match="pothole"):
        synthetic.make_image(np.random.default_rng(0), "pothole")
    assert not (tmp_path / "bad").exists()


def test_the_same_settings_reuse_the_set_and_others_need_overwrite(tmp_path):
    dest = make(tmp_path / "set", per_class=5, seed=1)
    marker = dest / "Positive" / "00001.jpg"
    marker.write_bytes(b"not regenerated")
    assert make(dest, per_class=5, seed=1) == dest and marker.read_bytes() == b"not regenerated"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make(dest, per_class=5, seed=2)
    (dest / "stale.txt").write_text("from the old set")
    make(dest, per_class=6, seed=2, overwrite=True)
    assert json.loads((dest / SOURCE_FILE).read_text())["seed"] == 2 and not (dest / "stale.txt").exists()
    assert len(list((dest / "Negative").glob("*.jpg"))) == 6 and leftovers(tmp_path) == []
    (tmp_path / "empty").mkdir()
    assert len(list((make(tmp_path / "empty", per_class=2) / "Positive").iterdir())) == 2


def test_a_folder_the_generator_did_not_make_is_never_replaced(tmp_path):
    mine = tmp_path / "mine"
    (mine / "Positive").mkdir(parents=True)  # looks like a data set, but no record says so
    (mine / "thesis.txt").write_text("three years of work")
    real = tmp_path / "real"
    (real / "Positive").mkdir(parents=True)
    (real / SOURCE_FILE).write_text(json.dumps({"source": "download"}))
    for folder, overwrite in ((mine, False), (mine, True), (real, True)):
        with pytest.raises(FileExistsError) as error:
            make(folder, overwrite=overwrite)
        assert "did not make" in str(error.value) and "choose an empty or new folder" in str(error.value)
    assert (mine / "thesis.txt").read_text() == "three years of work" and (real / "Positive").is_dir()
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="is a file"):
        make(tmp_path / "notes.txt", overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep" and leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_nothing_half_written_after_an_error(tmp_path, monkeypatch, error):
    old = make(tmp_path / "old", per_class=3, seed=1)
    before = file_hashes(old)
    calls = []

    def failing_make_image(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise error("stopped half-way")
        return synthetic.make_image(*args, **kwargs)

    monkeypatch.setattr(synthetic_dataset, "make_image", failing_make_image)
    with pytest.raises(error):
        make(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    calls.clear()
    with pytest.raises(error):
        make(old, per_class=4, seed=2, overwrite=True)
    assert file_hashes(old) == before  # the old set survives a failed overwrite
    assert leftovers(tmp_path) == []


def test_your_own_classes(tmp_path):
    classes = {"no_defect": "plain", "crack": "crack", "stain": "stain"}
    dest = make(tmp_path / "three", per_class=6, classes=classes)
    assert sorted(p.name for p in dest.iterdir() if p.is_dir()) == ["crack", "no_defect", "stain"]
    assert {(name.split("/")[0], kind) for name, kind in read_manifest(dest).items()} == {
        ("no_defect", "plain"),
        ("crack", "crack"),
        ("stain", "stain"),
    }


# ----------------------------------------------------------------------------- images and masks
def test_crack_mask_present_for_cracks_and_empty_otherwise():
    for i in range(10):
        image, info = synthetic.make_image(np.random.default_rng(i), "crack")
        assert info["recipe"] == info["kind"] == "crack" and info["mask"].any()
        assert info["mask"].shape == (227, 227) and image.size == (227, 227) and image.mode == "RGB"
    for recipe in ("plain", "no_crack", "stain", "shadow", "pores", "scratch"):
        for i in range(3):
            assert not synthetic.make_image(np.random.default_rng(i), recipe)[1]["mask"].any(), recipe


def test_no_crack_mixes_plain_surfaces_and_hard_cases():
    kinds = [synthetic.make_image(np.random.default_rng(i), "no_crack")[1]["kind"] for i in range(60)]
    assert "plain" in kinds and len(set(kinds) & HARD_KINDS) >= 3
    assert 0.3 < kinds.count("plain") / len(kinds) < 0.7


def test_cracks_are_darker_than_their_surroundings():
    for i in range(10):
        image, info = synthetic.make_image(np.random.default_rng(100 + i), "crack")
        grey, mask = np.asarray(image.convert("L"), dtype=float), info["mask"]
        grown = np.asarray(Image.fromarray(mask).convert("L").filter(ImageFilter.MaxFilter(9))) > 0
        assert grey[mask].mean() < grey[grown & ~mask].mean() - 20, i  # against a band a few pixels wide


def test_draw_crack_follows_its_arguments():
    surface = synthetic.make_surface(np.random.default_rng(0))
    before = surface.copy()
    thin = synthetic.draw_crack(surface, np.random.default_rng(1), start=(0.0, 113.0), angle=0.0, length=400.0, width=2)
    assert not np.array_equal(surface, before)  # drew in place
    cols = np.nonzero(thin)[1]
    assert cols.min() <= 3 and cols.max() >= 200  # from the left edge, heading right
    wide = synthetic.draw_crack(before, np.random.default_rng(1), start=(0.0, 113.0), angle=0.0, length=400.0, width=12)
    assert wide.sum() > 2.5 * thin.sum()


def test_make_surface_any_size():
    big = synthetic.make_surface(np.random.default_rng(0), height=1362, width=1816)
    assert big.shape == (1362, 1816, 3) and big.dtype == np.float32
    assert 0 <= big.min() and big.max() <= 255 and big.std() > 1
    assert synthetic.make_surface(np.random.default_rng(0), 31, 17).shape == (31, 17, 3)
    mask = synthetic.draw_crack(big, np.random.default_rng(0))
    assert mask.shape == (1362, 1816) and mask.any()


# ----------------------------------------------------------------------------- statistics
def test_image_statistics_of_a_solid_colour(tmp_path):
    for name, colour in (("Positive", (200, 100, 50)), ("Negative", (0, 0, 0))):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8), colour).save(tmp_path / name / f"{i}.png")
    stats = image_statistics(tmp_path, max_per_class=2)
    assert sorted(stats) == ["Negative", "Positive"] and stats["Positive"].n == 2
    assert stats["Positive"].mean_rgb == [200, 100, 50] and stats["Positive"].std_rgb == [0, 0, 0]
    luma = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50, 2)
    positive = stats["Positive"]
    assert (positive.brightness_p05, positive.brightness_p50, positive.brightness_p95) == (luma, luma, luma)
    assert stats["Negative"].brightness_p50 == 0


def test_statistics_close_to_real_sample(tmp_path, real_sample):
    """The generator was tuned on a real sample (250 images per class). Tolerances, per class: channel means
    within 12 grey levels, channel stds within a factor 1.3, and the 5th, 50th and 95th percentiles of per-image
    brightness within 15 grey levels."""
    real = image_statistics(real_sample)
    fake = image_statistics(make(tmp_path / "stats", per_class=150, seed=0))
    for folder in ("Positive", "Negative"):
        r, f = real[folder], fake[folder]
        assert np.allclose(f.mean_rgb, r.mean_rgb, atol=12), (folder, r, f)
        ratio = np.array(f.std_rgb) / np.array(r.std_rgb)
        assert np.all((1 / 1.3 < ratio) & (ratio < 1.3)), (folder, r, f)
        for key in ("brightness_p05", "brightness_p50", "brightness_p95"):
            assert abs(getattr(f, key) - getattr(r, key)) < 15, (folder, key, r, f)
