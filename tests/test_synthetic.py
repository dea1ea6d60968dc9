"""Tests for helpers.synthetic and helpers.synthetic_dataset: the offline stand-in for the
concrete crack photos."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from helpers import synthetic, synthetic_dataset
from helpers.settings import SOURCE_FILE

HARD_KINDS = {"stain", "shadow", "pores", "scratch"}


def make(dest: Path, **kwargs) -> Path:
    """generate_dataset with a small default size and no progress bar."""
    kwargs.setdefault("per_class", 8)
    kwargs.setdefault("progress", False)
    return synthetic_dataset.generate_dataset(dest, **kwargs)


def file_hashes(folder: Path) -> dict[str, str]:
    """{"Positive/00001.jpg": md5, ...} for every JPEG under folder."""
    return {
        f"{f.parent.name}/{f.name}": hashlib.md5(f.read_bytes()).hexdigest() for f in sorted(folder.glob("*/*.jpg"))
    }


def read_manifest(folder: Path) -> list[dict]:
    with open(folder / synthetic_dataset.MANIFEST_NAME, newline="") as handle:
        return list(csv.DictReader(handle))


def leftovers(parent: Path) -> list[str]:
    """Hidden temporary or old folders that generate_dataset should never leave behind."""
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return make(tmp_path_factory.mktemp("small") / "synthetic", per_class=12, seed=3)


# ----------------------------------------------------------------------------- layout


def test_layout_and_naming(small_set):
    assert sorted(p.name for p in small_set.iterdir()) == [
        "Negative",
        "Positive",
        synthetic_dataset.MANIFEST_NAME,
        SOURCE_FILE,
    ]
    for folder in ("Positive", "Negative"):
        names = sorted(p.name for p in (small_set / folder).iterdir())
        assert names == [f"{i:05d}.jpg" for i in range(1, 13)]


def test_images_are_227_rgb_jpegs(small_set):
    for path in small_set.glob("*/*.jpg"):
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (227, 227))
            image.load()


def test_manifest_lists_every_file_with_its_kind(small_set):
    rows = read_manifest(small_set)
    assert list(rows[0]) == ["class", "filename", "kind", "duplicate_of"]
    assert len(rows) == 24
    assert {(r["class"], r["filename"]) for r in rows} == set(
        (p.parent.name, p.name) for p in small_set.glob("*/*.jpg")
    )
    assert {r["kind"] for r in rows if r["class"] == "Positive"} == {"crack"}
    assert {r["kind"] for r in rows if r["class"] == "Negative"} <= HARD_KINDS | {"plain"}


def test_workbook_source_json(small_set):
    source = json.loads((small_set / SOURCE_FILE).read_text())
    assert list(source) == [
        "source",
        "generator",
        "seed",
        "per_class",
        "classes",
        "duplicate_fraction",
        "quality",
        "created",
    ]
    assert source["source"] == "synthetic" and source["generator"] == "helpers.synthetic"
    assert (source["seed"], source["per_class"], source["quality"]) == (3, 12, 90)
    assert source["classes"] == {"Positive": "crack", "Negative": "no_crack"}
    assert source["duplicate_fraction"] == {"Positive": 0.015, "Negative": 0.065}
    created = datetime.fromisoformat(source["created"])
    assert created.utcoffset() == timezone.utc.utcoffset(None)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_different_seed_different_bytes(tmp_path):
    first = file_hashes(make(tmp_path / "a", seed=11))
    again = file_hashes(make(tmp_path / "b", seed=11, progress=True))
    other = file_hashes(make(tmp_path / "c", seed=12))
    assert first == again
    assert sum(first[name] != other[name] for name in first) == len(first)


def test_images_do_not_depend_on_per_class(tmp_path):
    short = file_hashes(make(tmp_path / "short", per_class=4, duplicate_fraction=0))
    long = file_hashes(make(tmp_path / "long", per_class=9, duplicate_fraction=0))
    assert all(long[name] == digest for name, digest in short.items())


# ----------------------------------------------------------------------------- duplicates


@pytest.mark.parametrize("fractions", [{"Positive": 0.1, "Negative": 0.25}, None])
def test_duplicates_at_requested_fraction(tmp_path, fractions):
    per_class = 40
    dest = make(tmp_path / "dups", per_class=per_class, duplicate_fraction=fractions)
    expected = fractions or {"Positive": 0.015, "Negative": 0.065}
    rows = read_manifest(dest)
    for folder, fraction in expected.items():
        n_copies = int(fraction * per_class + 0.5)  # rounded half up: 4 and 10, or 1 and 3
        hashes = [hashlib.md5(p.read_bytes()).hexdigest() for p in sorted((dest / folder).glob("*.jpg"))]
        assert len(hashes) - len(set(hashes)) == n_copies
        copies = [r for r in rows if r["class"] == folder and r["duplicate_of"]]
        assert len(copies) == n_copies
        for row in copies:  # byte-identical to the file it names
            copy, original = dest / folder / row["filename"], dest / folder / row["duplicate_of"]
            assert copy.read_bytes() == original.read_bytes()
            assert not next(r for r in rows if r["class"] == folder and r["filename"] == row["duplicate_of"])[
                "duplicate_of"
            ]


def test_zero_disables_duplicates(tmp_path):
    dest = make(tmp_path / "unique", per_class=20, duplicate_fraction=0)
    hashes = file_hashes(dest)
    assert len(set(hashes.values())) == len(hashes) == 40
    assert not any(r["duplicate_of"] for r in read_manifest(dest))
    assert json.loads((dest / SOURCE_FILE).read_text())["duplicate_fraction"] == {"Positive": 0.0, "Negative": 0.0}


def test_bad_duplicate_fraction_is_refused(tmp_path):
    with pytest.raises(ValueError):
        make(tmp_path / "bad", duplicate_fraction=0.9)
    with pytest.raises(ValueError):
        make(tmp_path / "bad", duplicate_fraction={"Cracks": 0.1})
    assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- skip, overwrite, atomic


def test_matching_settings_skip_and_leave_the_folder_untouched(tmp_path):
    dest = make(tmp_path / "set", per_class=5, seed=1)
    marker = dest / "Positive" / "00001.jpg"
    marker.write_bytes(b"not regenerated")
    assert make(tmp_path / "set", per_class=5, seed=1) == dest
    assert marker.read_bytes() == b"not regenerated"


def test_other_settings_raise_unless_overwrite(tmp_path):
    dest = make(tmp_path / "set", per_class=5, seed=1)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make(dest, per_class=5, seed=2)
    with pytest.raises(FileExistsError):
        make(dest, per_class=5, seed=1, quality=80)
    (dest / "stale.txt").write_text("from the old set")
    make(dest, per_class=6, seed=2, overwrite=True)
    assert json.loads((dest / SOURCE_FILE).read_text())["seed"] == 2
    assert not (dest / "stale.txt").exists()
    assert len(list((dest / "Negative").glob("*.jpg"))) == 6
    assert leftovers(tmp_path) == []


def test_existing_folder_without_source_file_is_not_overwritten(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="did not make .e.g. notes.txt.; choose an empty or new folder"):
        make(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_overwrite_refuses_a_folder_the_workbook_did_not_make(tmp_path):
    """overwrite=True replaces a generated set, never someone's own folder (issue item 2)."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("three years of work")
    (mine / "Positive").mkdir()  # looks like a data set, but no record says so
    for overwrite in (False, True):
        with pytest.raises(FileExistsError) as error:
            make(mine, overwrite=overwrite)
        message = str(error.value)
        assert message == (
            f"{mine} holds files the workbook did not make (e.g. thesis.txt); choose an empty or new folder."
        )
        assert "\n" not in message
    assert (mine / "thesis.txt").read_text() == "three years of work"
    assert sorted(p.name for p in mine.iterdir()) == ["Positive", "thesis.txt"]
    assert leftovers(tmp_path) == []

    # A record that says "download" is not the generator's either.
    real = tmp_path / "real"
    (real / "Positive").mkdir(parents=True)
    (real / SOURCE_FILE).write_text(json.dumps({"source": "download"}))
    (real / synthetic_dataset.MANIFEST_NAME).write_text("class,filename,kind,duplicate_of\n")
    with pytest.raises(FileExistsError, match="did not make"):
        make(real, overwrite=True)
    assert (real / "Positive").is_dir()

    # A file given as the folder is refused too, and left alone.
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="is a file"):
        make(tmp_path / "notes.txt", overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep"


def test_overwrite_still_replaces_a_generated_set_and_an_empty_folder(tmp_path):
    dest = make(tmp_path / "set", per_class=3, seed=1)
    (dest / ".verified.json").write_text("{}")  # what later notebooks add beside the images
    make(dest, per_class=4, seed=2, overwrite=True)
    assert json.loads((dest / SOURCE_FILE).read_text())["per_class"] == 4
    assert not (dest / ".verified.json").exists()
    (tmp_path / "empty").mkdir()
    assert len(list((make(tmp_path / "empty", per_class=2, overwrite=True) / "Positive").iterdir())) == 2
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_no_temp_folder_left_after_an_error(tmp_path, monkeypatch, error):
    real_make_image = synthetic.make_image
    calls = []

    def failing_make_image(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise error("stopped half-way")
        return real_make_image(*args, **kwargs)

    monkeypatch.setattr(synthetic_dataset, "make_image", failing_make_image)
    with pytest.raises(error):
        make(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    assert leftovers(tmp_path) == []

    monkeypatch.setattr(synthetic_dataset, "make_image", real_make_image)
    old = make(tmp_path / "old", per_class=3, seed=1)
    before = file_hashes(old)
    monkeypatch.setattr(synthetic_dataset, "make_image", failing_make_image)
    calls.clear()
    with pytest.raises(error):
        make(old, per_class=4, seed=2, overwrite=True)
    assert file_hashes(old) == before  # the old set survives a failed overwrite
    assert leftovers(tmp_path) == []


def test_custom_three_classes(tmp_path):
    classes = {"no_defect": "plain", "crack": "crack", "stain": "stain"}
    dest = make(tmp_path / "three", per_class=6, classes=classes)
    assert sorted(p.name for p in dest.iterdir() if p.is_dir()) == ["crack", "no_defect", "stain"]
    kinds = {(r["class"], r["kind"]) for r in read_manifest(dest)}
    assert kinds == {("no_defect", "plain"), ("crack", "crack"), ("stain", "stain")}
    source = json.loads((dest / SOURCE_FILE).read_text())
    assert source["classes"] == classes
    assert source["duplicate_fraction"] == {"no_defect": 0.065, "crack": 0.015, "stain": 0.065}


# ----------------------------------------------------------------------------- images and masks


def test_crack_mask_present_for_cracks_and_empty_otherwise():
    for i in range(10):
        image, info = synthetic.make_image(np.random.default_rng(i), "crack")
        assert info["recipe"] == info["kind"] == "crack"
        assert info["mask"].shape == (227, 227) and info["mask"].dtype == bool
        assert info["mask"].any()
        assert image.size == (227, 227) and image.mode == "RGB"
    for recipe in ("plain", "no_crack", "stain", "shadow", "pores", "scratch"):
        for i in range(3):
            _, info = synthetic.make_image(np.random.default_rng(i), recipe)
            assert not info["mask"].any(), recipe


def test_no_crack_mixes_plain_surfaces_and_hard_cases():
    kinds = [synthetic.make_image(np.random.default_rng(i), "no_crack")[1]["kind"] for i in range(60)]
    assert "plain" in kinds and len(set(kinds) & HARD_KINDS) >= 3
    assert 0.3 < kinds.count("plain") / len(kinds) < 0.7


def test_cracks_are_darker_than_their_surroundings():
    for i in range(10):
        image, info = synthetic.make_image(np.random.default_rng(100 + i), "crack")
        grey = np.asarray(image.convert("L"), dtype=float)
        mask = info["mask"]
        grown = np.asarray(Image.fromarray(mask).convert("L").filter(ImageFilter.MaxFilter(9))) > 0
        ring = grown & ~mask  # a band a few pixels wide around the crack
        assert grey[mask].mean() < grey[ring].mean() - 20, i


def test_draw_crack_follows_its_arguments():
    surface = synthetic.make_surface(np.random.default_rng(0))
    before = surface.copy()
    thin = synthetic.draw_crack(
        surface, np.random.default_rng(1), start=(0.0, 113.0), angle=0.0, length=400.0, width=2.0
    )
    assert not np.array_equal(surface, before)  # drew in place
    rows, cols = np.nonzero(thin)
    assert cols.min() <= 3 and cols.max() >= 200  # from the left edge, heading right
    wide = synthetic.draw_crack(
        before.copy(), np.random.default_rng(1), start=(0.0, 113.0), angle=0.0, length=400.0, width=12.0
    )
    assert wide.sum() > 2.5 * thin.sum()


def test_make_surface_any_size():
    big = synthetic.make_surface(np.random.default_rng(0), height=1362, width=1816)
    assert big.shape == (1362, 1816, 3) and big.dtype == np.float32
    assert 0 <= big.min() and big.max() <= 255 and big.std() > 1
    small = synthetic.make_surface(np.random.default_rng(0), 31, 17)
    assert small.shape == (31, 17, 3)
    mask = synthetic.draw_crack(big, np.random.default_rng(0))
    assert mask.shape == (1362, 1816) and mask.any()


def test_unknown_recipe_is_refused(tmp_path):
    with pytest.raises(ValueError):
        synthetic.make_image(np.random.default_rng(0), "pothole")
    with pytest.raises(ValueError):
        make(tmp_path / "x", classes={"Positive": "pothole"})


# ----------------------------------------------------------------------------- statistics


def test_image_statistics_keys(small_set):
    stats = synthetic_dataset.image_statistics(small_set, max_per_class=5)
    assert sorted(stats) == ["Negative", "Positive"]
    for entry in stats.values():
        assert entry["n"] == 5
        assert len(entry["mean_rgb"]) == len(entry["std_rgb"]) == 3
        assert entry["brightness_p05"] <= entry["brightness_p50"] <= entry["brightness_p95"]


def test_statistics_close_to_real_sample(tmp_path, real_sample):
    """The generator was tuned on a real sample (250 images per class). Tolerances, per class:
    channel means within 12 grey levels, channel stds within a factor 1.3, and the 5th, 50th
    and 95th percentiles of per-image brightness within 15 grey levels."""
    real = synthetic_dataset.image_statistics(real_sample)
    fake = synthetic_dataset.image_statistics(make(tmp_path / "stats", per_class=150, seed=0))
    for folder in ("Positive", "Negative"):
        r, f = real[folder], fake[folder]
        assert np.allclose(f["mean_rgb"], r["mean_rgb"], atol=12), (folder, r, f)
        ratio = np.array(f["std_rgb"]) / np.array(r["std_rgb"])
        assert np.all((1 / 1.3 < ratio) & (ratio < 1.3)), (folder, r, f)
        for key in ("brightness_p05", "brightness_p50", "brightness_p95"):
            assert abs(f[key] - r[key]) < 15, (folder, key, r, f)
