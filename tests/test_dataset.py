"""Tests for helpers/dataset.py on small generated image sets (and, if given, the real sample).

Set WORKBOOK_REAL_SAMPLE to a folder with Positive/ and Negative/ to run the real-data test.
"""

import hashlib
import io
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader

from helpers.dataset import (
    CLASS_NAMES,
    CrackDataset,
    DatasetNotFoundError,
    FolderDataset,
    Sample,
    default_transform,
    find_split_leakage,
    interleave,
    list_class_files,
    split_index,
)
from helpers.inference import load_image_tensor
from helpers.plumbing import BadImageError

SIZE = 227


def noise_image(seed: int, mode: str = "RGB") -> Image.Image:
    """A 227x227 image of random noise: different seeds give different files."""
    pixels = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def make_dataset(root: Path, n_pos: int = 20, n_neg: int = 20, seed: int = 0) -> Path:
    """Create root/Positive and root/Negative with real-style names, in shuffled order."""
    names = {
        "Positive": [f"{i:05d}.jpg" for i in range(1, n_pos + 1)],
        "Negative": [f"{i:05d}.jpg" for i in range(1, n_neg + 1)],
    }
    if n_pos > 3:
        names["Positive"][-2:] = ["10000_1.jpg", "10001_1.jpg"]  # names as in the real data
    jobs = [(cls, name) for cls, files in names.items() for name in files]
    random.Random(seed).shuffle(jobs)  # creation order differs from name order
    for number, (cls, name) in enumerate(jobs):
        (root / cls).mkdir(parents=True, exist_ok=True)
        noise_image(seed * 10_000 + number).save(root / cls / name, quality=90)
    return root


def ids(dataset):
    return [s.sample_id for s in dataset.samples]


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.fixture
def root40(tmp_path):
    return make_dataset(tmp_path / "data", 20, 20)


# ----------------------------------------------------------------------------- file lists
def test_files_sorted_whatever_the_directory_order(tmp_path, monkeypatch):
    root = make_dataset(tmp_path, 8, 8)
    original_iterdir = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(original_iterdir(self), reverse=True)))
    files = list_class_files(root, "Positive")
    names = [p.name for p in files]
    assert names == sorted(names)
    assert names[0] == "00001.jpg" and names[-1] == "10001_1.jpg"
    data = CrackDataset(root, split="all", progress=False)
    assert ids(data)[:4] == ["Positive/00001.jpg", "Negative/00001.jpg", "Positive/00002.jpg", "Negative/00002.jpg"]


def test_junk_files_ignored_and_all_image_kinds_kept(tmp_path):
    folder = tmp_path / "Positive"
    folder.mkdir()
    for seed, name in enumerate(["b.jpg", "a.png", "c.jpeg", "d.bmp", "e.JPG"]):
        noise_image(seed).save(folder / name)
    for junk in [".DS_Store", "Thumbs.db", "desktop.ini", "notes.txt", "._b.jpg", "data.csv", "tensor.pt"]:
        (folder / junk).write_bytes(b"not an image")  # macOS leaves ._b.jpg beside b.jpg on some drives
    (folder / "sub.jpg").mkdir()  # a folder with an image-like name is not a file
    names = [p.name for p in list_class_files(tmp_path, "Positive")]
    assert names == ["a.png", "b.jpg", "c.jpeg", "d.bmp", "e.JPG"]


def test_interleave_equal_and_unequal():
    assert interleave([["p1", "p2"], ["n1", "n2"]]) == ["p1", "n1", "p2", "n2"]
    assert interleave([["p1", "p2", "p3"], ["n1"]]) == ["p1", "n1", "p2", "p3"]
    assert interleave([["p1"], ["n1", "n2"]]) == ["p1", "n1", "n2"]
    assert interleave([["a1", "a2"], ["b1"], ["c1", "c2"]]) == ["a1", "b1", "c1", "a2", "c2"]
    assert interleave([[], []]) == []


def test_split_index():
    assert split_index(40_000) == 30_000
    assert split_index(500) == 375
    assert split_index(80) == 60
    assert split_index(100, 0.29) == 29  # 100 * 0.29 is 28.999... in floating point
    assert split_index(7) == 5
    with pytest.raises(ValueError):
        split_index(10, 1.5)


# ----------------------------------------------------------------------------- the splits
def test_the_capstone_split(tmp_path):
    root = make_dataset(tmp_path / "eighty", 40, 40)
    train, val, everything = (CrackDataset(root, split=s, progress=False) for s in ("train", "val", "all"))
    assert (len(train), len(val), len(everything)) == (60, 20, 80)  # the first 75% for training
    assert ids(train) + ids(val) == ids(everything)
    assert everything.labels().tolist() == [1, 0] * 40 and everything.labels().dtype == torch.long  # positives first
    assert all(s.sample_id.startswith(f"{CLASS_NAMES[s.label]}/") for s in everything.samples)
    assert everything.classes == list(CLASS_NAMES) == ["Negative", "Positive"]
    assert train.class_counts() == {"Negative": 30, "Positive": 30}
    assert val.samples[0] == Sample(0, "Positive/00031.jpg", root / "Positive" / "00031.jpg", 1)  # 0: its place in val
    assert [s.index for s in val.samples] == list(range(20))
    assert ids(val.part(0, 5)) + ids(val.part(5)) == ids(val) and val.part(5).root == root  # halves, same kind
    assert len(CrackDataset(root, split="train", train_fraction=0.5, progress=False)) == 40
    unequal = make_dataset(tmp_path / "unequal", 12, 8)  # the classes alternate while both last
    assert CrackDataset(unequal, split="all", progress=False).labels().tolist() == [1, 0] * 8 + [1] * 4
    assert len(CrackDataset(unequal, split="train", progress=False)) == 15


def test_unknown_split_and_bad_options(root40):
    with pytest.raises(ValueError) as error:
        CrackDataset(root40, split="test", progress=False)
    for allowed in ("train", "val", "all"):
        assert allowed in str(error.value)
    with pytest.raises(ValueError, match="'default'"):
        CrackDataset(root40, transform="imagenet", progress=False)
    with pytest.raises(ValueError, match="between 0 and 1"):
        CrackDataset(root40, train_fraction=75, progress=False)


# ----------------------------------------------------------------------------- duplicates
def copy_bytes(source: Path, target: Path) -> None:
    target.write_bytes(source.read_bytes())


def test_dedupe_and_leakage_report(root40):
    pos, neg = root40 / "Positive", root40 / "Negative"
    # The plain split keeps positives 00001-00015 and negatives 00001-00015 in train.
    copy_bytes(pos / "00001.jpg", pos / "00018.jpg")  # crosses the split, same class
    copy_bytes(neg / "00001.jpg", neg / "00017.jpg")  # crosses the split, same class
    copy_bytes(pos / "00002.jpg", neg / "00019.jpg")  # crosses the split, both labels
    copy_bytes(neg / "00002.jpg", neg / "00018.jpg")  # one train image, two copies in val
    copy_bytes(neg / "00002.jpg", neg / "00020.jpg")
    copy_bytes(pos / "00016.jpg", pos / "00017.jpg")  # both copies in val: no leak
    copy_bytes(pos / "00003.jpg", pos / "00004.jpg")  # both copies in train: no leak

    train = CrackDataset(root40, split="train", progress=False)
    val = CrackDataset(root40, split="val", progress=False)
    report = find_split_leakage(train, val)
    assert report.n_val == 10
    assert report.n_val_in_train == 5
    assert sorted(sorted(g) for g in report.groups) == [
        ["Negative/00001.jpg", "Negative/00017.jpg"],
        ["Negative/00002.jpg", "Negative/00018.jpg", "Negative/00020.jpg"],
        ["Negative/00019.jpg", "Positive/00002.jpg"],
        ["Positive/00001.jpg", "Positive/00018.jpg"],
    ]
    assert report.cross_class_groups == 1
    assert str(report).startswith("5 of 10 validation images (50.0%) also appear, byte for byte")

    d_train = CrackDataset(root40, split="train", dedupe=True, progress=False)
    d_val = CrackDataset(root40, split="val", dedupe=True, progress=False)
    everything = CrackDataset(root40, split="all", progress=False)
    assert (len(d_train), len(d_val)) == (35, 5)  # train grows by the five moved copies
    train_hashes = {sha1(s.path) for s in d_train.samples}
    assert not train_hashes & {sha1(s.path) for s in d_val.samples}
    assert sorted(ids(d_train) + ids(d_val)) == sorted(ids(everything))
    position = {sample_id: i for i, sample_id in enumerate(ids(everything))}
    for split in (d_train, d_val):  # relative order kept
        assert [position[i] for i in ids(split)] == sorted(position[i] for i in ids(split))
        assert [s.index for s in split.samples] == list(range(len(split)))
    assert {"Positive/00016.jpg", "Positive/00017.jpg"} <= set(ids(d_val))
    assert find_split_leakage(d_train, d_val).n_val_in_train == 0
    assert "0 of 5 validation images (0.0%)" in str(find_split_leakage(d_train, d_val))


# ----------------------------------------------------------------------------- bad data
def test_grayscale_and_rgba_become_rgb(tmp_path):
    root = make_dataset(tmp_path, 2, 2)
    noise_image(1, "L").save(root / "Positive" / "00000_gray.png")
    noise_image(2, "RGBA").save(root / "Negative" / "00000_rgba.png")
    noise_image(3, "P").save(root / "Negative" / "00000_palette.png")
    data = CrackDataset(root, split="all", progress=False)
    for i in range(len(data)):
        image, _ = data[i]
        assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    raw = CrackDataset(root, split="all", transform=None, progress=False)
    assert all(raw[i][0].mode == "RGB" for i in range(len(raw)))


def write_broken_files(root: Path) -> None:
    good = root / "Positive" / "00003.jpg"
    (root / "Positive" / "00004.jpg").write_bytes(good.read_bytes()[:3000])  # truncated JPEG
    (root / "Negative" / "00004.jpg").write_bytes(b"garbage, not a JPEG" * 50)


def test_bad_image_raises_on_access(tmp_path):
    root = make_dataset(tmp_path, 6, 6)
    write_broken_files(root)
    data = CrackDataset(root, split="all", progress=False)
    assert len(data) == 12
    for index, name in [(6, "Positive"), (7, "Negative")]:
        assert data.samples[index].sample_id == f"{name}/00004.jpg"
        with pytest.raises(BadImageError) as error:
            data[index]
        assert str(error.value).startswith(f"{root / name / '00004.jpg'}: not readable as an image")
        assert "delete or replace the file" in str(error.value)
    data[0]  # the good ones still load


def test_missing_data_messages(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        CrackDataset(tmp_path / "nowhere", progress=False)
    assert "01_download_data" in str(error.value) and "nowhere" in str(error.value)
    assert isinstance(error.value, FileNotFoundError)

    (tmp_path / "Positive").mkdir()
    noise_image(0).save(tmp_path / "Positive" / "00001.jpg")
    with pytest.raises(DatasetNotFoundError) as error:
        CrackDataset(tmp_path, progress=False)
    assert "Negative" in str(error.value) and "01_download_data" in str(error.value)

    (tmp_path / "Negative").write_bytes(b"a file")  # issue 29: a class folder that is a file is named as one
    with pytest.raises(
        DatasetNotFoundError, match=re.escape(f"Class folder {tmp_path / 'Negative'} is a file, not a folder. ")
    ):
        CrackDataset(tmp_path, progress=False)
    with pytest.raises(DatasetNotFoundError, match=re.escape(f"Dataset folder {tmp_path / 'Negative'} is a file")):
        CrackDataset(tmp_path / "Negative", progress=False)

    (tmp_path / "Negative").unlink()
    (tmp_path / "Negative").mkdir()
    (tmp_path / "Negative" / ".DS_Store").write_bytes(b"junk")
    with pytest.raises(DatasetNotFoundError) as error:
        CrackDataset(tmp_path, progress=False)
    assert "Negative" in str(error.value) and "01_download_data" in str(error.value)


# ----------------------------------------------------------------------------- image sizes
def huge_jpeg(path: Path, width: int = 10_000, height: int = 10_000) -> Path:
    """A JPEG whose header says width x height, made from a tiny one (no 300 MB image in this test)."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 90, 90)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline frame header: length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return path


def no_decoding(monkeypatch):
    """Make any decoding of pixel data fail the test: a check that reads only the header passes."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{getattr(self, 'filename', 'an image')} was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_other_sizes_are_resized_to_227_like_predict(tmp_path):
    root = make_dataset(tmp_path / "crack", 2, 2)
    wide = root / "Positive" / "00003.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(wide)
    noise_image(6, "L").resize((64, 80)).save(root / "Negative" / "00003.png")
    folder = tmp_path / "own"
    for name in ("crack", "stain"):
        (folder / name).mkdir(parents=True)
        for source in sorted(root.glob("*/00003.png")) + sorted(root.glob("*/00001.jpg")):
            copy_bytes(source, folder / name / f"{source.parent.name}_{source.name}")
    for data in (CrackDataset(root, split="all", progress=False), FolderDataset(folder, split="all")):
        assert all(data[i][0].shape == (3, SIZE, SIZE) for i in range(len(data)))
    crack = CrackDataset(root, split="all", progress=False)
    index = ids(crack).index("Positive/00003.png")
    assert torch.allclose(crack[index][0], load_image_tensor(wide), atol=1e-6)  # what predict feeds the model
    raw = FolderDataset(folder, split="all", transform=None)
    assert {raw[i][0].size for i in range(len(raw))} == {(SIZE, SIZE)}


def test_227_images_are_not_resized(root40, monkeypatch):
    def no_resize(*args, **kwargs):
        raise AssertionError("a 227x227 image was resized")

    monkeypatch.setattr(Image.Image, "resize", no_resize)
    data = CrackDataset(root40, split="all", progress=False)
    assert data[0][0].shape == (3, SIZE, SIZE)


@pytest.mark.parametrize(
    "side, size",
    [(10_000, "10000x10000 pixels (100 megapixels)"), (20_000, "over 179 megapixels")],  # PIL refuses the second
)
def test_an_enormous_image_is_refused_from_its_header(tmp_path, monkeypatch, side, size):
    root = make_dataset(tmp_path / "crack", 2, 2)
    huge = huge_jpeg(root / "Positive" / "00003.jpg", side, side)
    folder = tmp_path / "own"
    for name in ("crack", "stain"):
        (folder / name).mkdir(parents=True)
        copy_bytes(huge if name == "crack" else root / "Negative" / "00001.jpg", folder / name / "big.jpg")
    crack = CrackDataset(root, split="all", progress=False)
    no_decoding(monkeypatch)
    for data, path in ((crack, huge), (FolderDataset(folder, split="all"), folder / "crack" / "big.jpg")):
        position = [s.path for s in data.samples].index(path)
        with pytest.raises(BadImageError) as error:
            data[position]
        assert str(error.value) == (
            f"{path} is {size}, more than the 40 megapixels an image may have here: shrink it, "
            "or cut it into 227x227 tiles."
        )


# ----------------------------------------------------------------------------- transform & loading
def test_default_transform_normalises_a_solid_colour(tmp_path):
    image = Image.new("RGB", (SIZE, SIZE), (200, 100, 50))
    out = default_transform()(image)
    assert out.shape == (3, SIZE, SIZE)
    # Worked by hand: (200/255 - 0.485) / 0.229 = (0.784314 - 0.485) / 0.229 = 1.307047
    #                 (100/255 - 0.456) / 0.224 = (0.392157 - 0.456) / 0.224 = -0.285014
    #                 ( 50/255 - 0.406) / 0.225 = (0.196078 - 0.406) / 0.225 = -0.932985
    expected = torch.tensor([1.307047, -0.285014, -0.932985]).view(3, 1, 1).expand(3, SIZE, SIZE)
    assert torch.allclose(out, expected, atol=1e-4)
    # and through the dataset, from a lossless PNG
    for cls in ("Positive", "Negative"):
        (tmp_path / cls).mkdir()
        image.save(tmp_path / cls / "00001.png")
    assert torch.allclose(CrackDataset(tmp_path, split="all", progress=False)[0][0], expected, atol=1e-4)


def test_dataloader_batch_and_pickle(root40):
    data = CrackDataset(root40, split="train", progress=False)
    images, labels = next(iter(DataLoader(data, batch_size=4, shuffle=False, num_workers=0)))
    assert images.shape == (4, 3, SIZE, SIZE)
    assert labels.tolist() == [1, 0, 1, 0]
    copy = pickle.loads(pickle.dumps(data))
    assert ids(copy) == ids(data)
    assert torch.equal(copy[5][0], data[5][0])


# ----------------------------------------------------------------------------- the real sample
def test_real_sample(real_sample):
    train = CrackDataset(real_sample, split="train", progress=False)
    val = CrackDataset(real_sample, split="val", progress=False)
    assert (len(train), len(val)) == (375, 125)
    assert train.class_counts() == {"Negative": 187, "Positive": 188}
    assert train.samples[0].sample_id == "Positive/00162.jpg"
    assert train.samples[1].sample_id.startswith("Negative/")
    assert all(s.sample_id.endswith(".jpg") for s in train.samples + val.samples)
    for data in (train, val):
        for i in range(len(data)):
            image, label = data[i]
            assert image.shape == (3, SIZE, SIZE) and label == data.samples[i].label

    report = find_split_leakage(train, val)
    train_hashes = {sha1(s.path) for s in train.samples}
    val_hashes = [sha1(s.path) for s in val.samples]
    assert report.n_val == 125
    assert report.n_val_in_train == sum(h in train_hashes for h in val_hashes)
    assert len(report.groups) == len(set(val_hashes) & train_hashes)
    assert report.cross_class_groups <= len(report.groups)
    print(report)
