"""The concrete crack dataset as the IBM AI Capstone (DL0321EN) built it, with its flaws fixed; and your own classes.
Taught in notebook 02. As in the capstone, positives (``Positive/``, label 1) sit at even and negatives (``Negative/``,
label 0) at odd positions, the first 75% for training. Unlike it, file names are sorted (``os.listdir`` has no order:
each machine would get its own split), each image has a stable id ("Positive/00162.jpg") and is read as RGB at 227x227,
and byte-identical images can stay on one side of the split (``dedupe=True``). FolderDataset reads your own classes."""

from __future__ import annotations

import copy
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch
from torch.utils.data import Dataset
from torchvision import transforms

from helpers.plumbing import IMAGE_EXTENSIONS, TILE_SIZE, file_hashes, open_photo, printable, to_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASS_NAMES = ("Negative", "Positive")  # label 0 = no crack, 1 = crack
DOWNLOAD_HINT = "Run notebooks/01_download_data.ipynb or `python -m helpers data prepare` to create it."
OWN_CLASSES_HINT = "Put each class's images in a folder of its own: root/<class name>/."


class DatasetNotFoundError(FileNotFoundError):
    """The dataset folder, or one of its class folders, is missing or holds no images."""


@dataclass(frozen=True)
class Sample:
    """One image of a split: its position in the split, a stable id, the file and its label."""

    index: int
    sample_id: str  # "<class folder>/<file name>", the same on every machine
    path: Path
    label: int


def default_transform() -> Callable:
    """ToTensor then ImageNet normalisation, with no resize: the datasets hand it 227x227 images."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def list_class_files(root: str | Path, class_name: str, hint: str = DOWNLOAD_HINT) -> list[Path]:
    """The images of root/<class_name>, sorted by name in NFC (the same order on every machine), hidden ones out."""
    root, folder = Path(root), Path(root) / class_name
    for what, path in (("Dataset", root), ("Class", folder)):
        if not path.is_dir():
            why = "is a file, not a folder" if path.exists() else "does not exist"
            raise DatasetNotFoundError(f"{what} folder {path} {why}. {hint}")
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    files = sorted((p for p in files if p.is_file()), key=lambda p: unicodedata.normalize("NFC", p.name))
    if not files:
        raise DatasetNotFoundError(f"Class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}). {hint}")
    return files


def interleave(groups: Sequence[Sequence]) -> list:
    """One item from each group in turn, any number of groups of any lengths: [[p1, p2, p3], [n1]] -> [p1, n1, p2, p3].
    (The capstone's ``all_files[::2] = positive_files`` needed two lists of equal length.)"""
    longest = max((len(group) for group in groups), default=0)
    return [group[i] for i in range(longest) for group in groups if i < len(group)]


def split_index(n: int, train_fraction: float = 0.75) -> int:
    """How many of ``n`` samples go to training, rounded down (40,000 -> 30,000)."""
    if not 0.0 <= train_fraction <= 1.0:
        raise ValueError(f"train_fraction must lie between 0 and 1, got {train_fraction}")
    return int(n * train_fraction + 1e-9)  # the small term guards against 100 * 0.29 = 28.999...


class SampleSplit(Dataset):
    """What both datasets share: `samples` read as (image, label) through `transform` ("default": ToTensor and ImageNet
    normalisation; None: PIL images; or any callable). A subclass's `_pairs` gives the split's (path, label) pairs."""

    classes: list[str]

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "all"] = "train",
        transform: Callable | None | Literal["default"] = "default",
        train_fraction: float = 0.75,
    ):
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', not {split!r}.")
        if isinstance(transform, str) and transform != "default":
            raise ValueError(f"transform must be a callable, None or 'default'; got {transform!r}")
        self.root, self.split = Path(root), split
        self.transform = default_transform() if isinstance(transform, str) else transform
        self.samples = []
        for index, (path, label) in enumerate(self._pairs(train_fraction)):
            # the id "<class folder>/<file name>" in NFC: macOS's HFS+ hands out "e" + accent where others keep "é"
            sample_id = unicodedata.normalize("NFC", f"{path.parent.name}/{path.name}")
            try:
                sample_id.encode("utf-8")  # a name that is not UTF-8 is refused here, before any cache keys on it
            except UnicodeEncodeError:
                raise ValueError(
                    f"{printable(path)} has a name that is not UTF-8: rename it (letters, digits, - and _ are safe)."
                ) from None
            self.samples.append(Sample(index, sample_id, path, label))
        if not self.samples:
            raise DatasetNotFoundError(f"The {split!r} split of {self.root} is empty: each class needs more images.")

    def _cut(self, items: list, train_fraction: float) -> list:
        """This split's share of `items`: the first `train_fraction` for "train", the rest for "val"."""
        cut = split_index(len(items), train_fraction)
        return {"train": items[:cut], "val": items[cut:], "all": items}[self.split]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[idx]
        image = to_size(open_photo(sample.path), TILE_SIZE)  # RGB, 227x227 (bilinear, as predictions do)
        return (image if self.transform is None else self.transform(image)), sample.label

    def part(self, start: int, stop: int | None = None) -> SampleSplit:
        """Samples start..stop-1 of this split (to its end when stop is None), as a split of the same kind."""
        part = copy.copy(self)
        part.samples = self.samples[start:stop]
        return part

    def first(self, n: int) -> SampleSplit:
        """The first `n` samples of this split, e.g. for a quick run: part(0, n)."""
        return self.part(0, n)

    def labels(self) -> torch.Tensor:
        """All labels in split order, as a LongTensor (reads no image)."""
        return torch.tensor([sample.label for sample in self.samples], dtype=torch.long)

    def class_counts(self) -> dict[str, int]:
        """How many samples of each class this split holds, e.g. {"Negative": 750, "Positive": 750}."""
        labels = self.labels().tolist()
        return {name: labels.count(label) for label, name in enumerate(self.classes)}

    def content_hashes(self, progress: bool = False) -> list[str]:
        """The SHA-1 of every sample's file, in split order: equal digests, equal bytes."""
        return file_hashes([sample.path for sample in self.samples], progress)


class CrackDataset(SampleSplit):
    """Concrete photos with (1) and without (0) cracks, split as in the IBM capstone; ``dedupe=True`` then moves each
    group of byte-identical images to its first member's side, so images only move into training."""

    classes = list(CLASS_NAMES)

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "all"] = "train",
        transform: Callable | None | Literal["default"] = "default",
        train_fraction: float = 0.75,
        dedupe: bool = False,
        progress: bool = True,
    ):
        self.dedupe, self.progress = dedupe, progress
        super().__init__(root, split, transform, train_fraction)

    def _pairs(self, train_fraction: float) -> list[tuple[Path, int]]:
        positives, negatives = (list_class_files(self.root, name) for name in ("Positive", "Negative"))
        pairs = interleave([[(path, 1) for path in positives], [(path, 0) for path in negatives]])
        self.source_size = len(pairs)  # images in the folder, both splits
        if not self.dedupe or self.split == "all":
            return self._cut(pairs, train_fraction)
        cut = split_index(len(pairs), train_fraction)
        first_position: dict[str, int] = {}  # hash -> position of the first file with that content
        hashes = file_hashes([path for path, _ in pairs], self.progress)
        for position, digest in enumerate(hashes):
            first_position.setdefault(digest, position)
        wanted = self.split == "train"
        return [pair for pair, digest in zip(pairs, hashes) if (first_position[digest] < cut) == wanted]


class FolderDataset(SampleSplit):
    """Images in root/<class name>/ folders (torchvision's ImageFolder layout), labels 0, 1, 2... by sorted name, read
    like CrackDataset's; each split takes its share of every class (keeping the balance), the classes taken in turn."""

    def _pairs(self, train_fraction: float) -> list[tuple[Path, int]]:
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"Dataset folder {self.root} does not exist. {OWN_CLASSES_HINT}")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(self.classes) < 2:
            raise DatasetNotFoundError(
                f"Dataset folder {self.root} has {len(self.classes)} class folder(s) ({', '.join(self.classes)}); "
                f"a classifier needs at least 2. {OWN_CLASSES_HINT}"
            )
        per_class = [list_class_files(self.root, name, OWN_CLASSES_HINT) for name in self.classes]
        self.source_size = sum(map(len, per_class))
        return interleave(
            [[(p, label) for p in self._cut(files, train_fraction)] for label, files in enumerate(per_class)]
        )


@dataclass
class LeakageReport:
    """How many validation images also sit, byte for byte, in the training split."""

    n_val: int
    n_val_in_train: int
    groups: list[list[str]]  # sample ids of each duplicate group that crosses the split
    cross_class_groups: int  # groups whose members carry both labels

    def __str__(self) -> str:
        share = 100.0 * self.n_val_in_train / self.n_val if self.n_val else 0.0
        mixed = f" {self.cross_class_groups} of {len(self.groups)} such groups mix both labels."
        return (
            f"{self.n_val_in_train} of {self.n_val} validation images ({share:.1f}%) also appear, byte for byte, "
            f"in the training split.{mixed if self.cross_class_groups else ''}"
        )


def find_split_leakage(train: SampleSplit, val: SampleSplit) -> LeakageReport:
    """Compare the file contents of the two splits and report the duplicates that cross them."""
    train_hashes, val_hashes = train.content_hashes(), val.content_hashes()
    members: dict[str, list[Sample]] = {}
    for digest, sample in zip(train_hashes + val_hashes, train.samples + val.samples):
        members.setdefault(digest, []).append(sample)
    crossing = set(train_hashes) & set(val_hashes)
    groups = [members[digest] for digest in members if digest in crossing]
    return LeakageReport(
        n_val=len(val),
        n_val_in_train=sum(digest in crossing for digest in val_hashes),
        groups=[[sample.sample_id for sample in group] for group in groups],
        cross_class_groups=sum(len({sample.label for sample in group}) == 2 for group in groups),
    )
