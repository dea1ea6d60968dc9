"""The concrete crack dataset, as the IBM AI Capstone (DL0321EN) built it, with its flaws fixed.

The data are 227x227 photos of concrete in two folders, ``Positive/`` (a crack, label 1) and
``Negative/`` (no crack, label 0). Like the capstone, :class:`CrackDataset` puts positives at
even and negatives at odd positions, keeps the first 75% for training and the rest for
validation (30,000 / 10,000 on the full set). Unlike the capstone it:

* sorts the file names, so every machine gets the same split (``os.listdir`` has no order);
* gives every image a stable id such as ``"Positive/00162.jpg"``;
* reads every image through :func:`helpers.plumbing.images.load_image`: RGB, an image of another size
  resized to 227x227 (bilinear, as helpers.inference.load_image_tensor does) so a batch never mixes sizes, one above
  40 megapixels refused from its header, and the file named when it cannot be read;
* can keep byte-identical images on one side of the split (``dedupe=True``), because the
  dataset holds exact duplicates, and :func:`find_split_leakage` counts how many leak.

It also reads the capstone's second format: ``Positive_tensors/`` and ``Negative_tensors/``
folders of ``.pt`` files, each holding one image already preprocessed as a float tensor.
Your own classes, in any number, are read by :class:`helpers.folder_dataset.FolderDataset`.
"""

from __future__ import annotations

import copy
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.transforms.functional import to_pil_image
from tqdm.auto import tqdm

from helpers.plumbing.files import file_hashes
from helpers.plumbing.images import IMAGE_EXTENSIONS, TENSOR_EXTENSION, TILE_SIZE, is_readable, load_image, load_tensor
from helpers.plumbing.text import printable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASS_NAMES = ("Negative", "Positive")  # label 0 = no crack, 1 = crack
SPLITS = ("train", "val", "all")

IGNORED_FILE_NAMES = ("thumbs.db", "desktop.ini", ".ds_store")  # compared in lower case
DOWNLOAD_HINT = (
    "Run notebooks/01_download_data.ipynb, or `python -m helpers data download` (real data) "
    "/ `python -m helpers data synthetic` (offline) to create it."
)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset folder, or one of its class folders, is missing or empty."""


@dataclass(frozen=True)
class Sample:
    """One image of a split: where it sits, a stable id, the file and its label."""

    index: int  # position in this split (the capstone's "sample id" for the validation set)
    sample_id: str  # stable across machines: "<class folder>/<file name>"
    path: Path
    label: int


def default_transform() -> Callable:
    """ToTensor then ImageNet normalisation, with no resize: the datasets hand it 227x227 images."""
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    return transforms.Compose([transforms.ToTensor(), normalize])


# ----------------------------------------------------------------------------- file lists
def is_data_file(path: Path) -> bool:
    """True for image and .pt files; False for hidden files, system files and anything else."""
    name = path.name.lower()
    if name.startswith(".") or name in IGNORED_FILE_NAMES or not path.is_file():
        return False
    return path.suffix.lower() in IMAGE_EXTENSIONS + (TENSOR_EXTENSION,)


def sample_id_of(path: Path) -> str:
    """ "<class folder>/<file name>", the same on every system: "/" always, and Unicode in NFC (macOS's
    HFS+ hands out decomposed names, "e" + accent, where Linux and Windows keep the composed "é")."""
    return unicodedata.normalize("NFC", f"{path.parent.name}/{path.name}")


def name_order(path: Path) -> str:
    """The key files are sorted by: the name in NFC, so every system sorts them alike (see sample_id_of)."""
    return unicodedata.normalize("NFC", path.name)


def list_class_files(root: str | Path, class_name: str) -> list[Path]:
    """The data files of one class, sorted by name (the same order on every machine).

    The class folder is ``root/<class>``, or else ``root/<class>_tensors`` (capstone .pt files).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"Dataset folder {root} does not exist. {DOWNLOAD_HINT}")
    folder = root / class_name
    if not folder.is_dir() and (root / f"{class_name}_tensors").is_dir():
        folder = root / f"{class_name}_tensors"
    if not folder.is_dir():
        raise DatasetNotFoundError(f"Class folder {folder} does not exist. {DOWNLOAD_HINT}")
    files = sorted((path for path in folder.iterdir() if is_data_file(path)), key=name_order)
    if not files:
        raise DatasetNotFoundError(f"Class folder {folder} holds no images. {DOWNLOAD_HINT}")
    return files


class BadFileNameError(ValueError):
    """A data file whose name is not UTF-8: its name cannot go into the caches' keys or JSON records."""


def check_names(paths: Sequence[Path]) -> None:
    """Raise BadFileNameError naming the first file whose name is not valid UTF-8 (its bytes shown as \\xe9)."""
    for path in paths:
        try:
            path.name.encode("utf-8")
        except UnicodeEncodeError:
            raise BadFileNameError(
                f"{printable(path)} has a name that is not UTF-8: rename it (letters, digits, "
                "- and _ are safe) and run again."
            ) from None


def interleave(positives: Sequence, negatives: Sequence) -> list[tuple[object, int]]:
    """Positives at even positions (label 1), negatives at odd positions (label 0).

    The capstone needed equal counts (``all_files[::2] = positive_files`` fails otherwise).
    Here, with unequal counts, we alternate while both classes last, then append the rest.
    """
    pairs: list[tuple[object, int]] = []
    for positive, negative in zip(positives, negatives):
        pairs.append((positive, 1))
        pairs.append((negative, 0))
    shared = min(len(positives), len(negatives))
    pairs.extend((positive, 1) for positive in positives[shared:])
    pairs.extend((negative, 0) for negative in negatives[shared:])
    return pairs


def split_index(n: int, train_fraction: float = 0.75) -> int:
    """How many of ``n`` samples go to training, rounded down (40,000 -> 30,000)."""
    if not 0.0 <= train_fraction <= 1.0:
        raise ValueError(f"train_fraction must lie between 0 and 1, got {train_fraction}")
    return int(n * train_fraction + 1e-9)  # the small term guards against 100 * 0.29 = 28.999...


# ----------------------------------------------------------------------------- the dataset
class SampleSplit(Dataset):
    """What every split of images in the workbook offers besides `__getitem__`: its samples, labels, counts.

    Subclasses fill `samples` (a list of Sample) and `classes` (class names, by label).
    """

    samples: list[Sample]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.samples)

    def sample(self, idx: int) -> Sample:
        """The Sample (index, id, path, label) at position ``idx`` of this split."""
        return self.samples[idx]

    def labels(self) -> torch.Tensor:
        """All labels in split order, as a LongTensor (reads no image)."""
        return torch.tensor([sample.label for sample in self.samples], dtype=torch.long)

    def class_counts(self) -> dict[str, int]:
        """How many samples of each class this split holds, e.g. {"Negative": 750, "Positive": 750}."""
        labels = [sample.label for sample in self.samples]
        return {name: labels.count(label) for label, name in enumerate(self.classes)}

    def first(self, n: int) -> SampleSplit:
        """This split cut to its first `n` samples: same folder, transform and classes, e.g. for a quick subset."""
        if n < 0:
            raise ValueError(f"n must be 0 or more, not {n}.")
        return self.part(0, n)

    def part(self, start: int, stop: int | None = None) -> SampleSplit:
        """Samples start..stop-1 of this split (to the end when stop is None), as a split of the same kind.

        E.g. the first half of the validation images to choose with, the second half to report on.
        """
        part = copy.copy(self)
        part.samples = self.samples[start:stop]
        return part


class CrackDataset(SampleSplit):
    """Concrete photos with (1) and without (0) cracks, split as in the IBM capstone.

    ``dedupe=True`` first makes the capstone split, then moves every group of byte-identical
    images to the side of its first member. A group whose first member is in validation lies
    wholly in validation already, so images only move into training: train grows slightly.
    """

    classes = list(CLASS_NAMES)

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "all"] = "train",
        transform: Callable | None | Literal["default"] = "default",
        train_fraction: float = 0.75,
        dedupe: bool = False,
        bad_images: Literal["raise", "skip"] = "raise",
        progress: bool = True,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}; got {split!r}")
        if bad_images not in ("raise", "skip"):
            raise ValueError(f"bad_images must be 'raise' or 'skip'; got {bad_images!r}")
        self.root = Path(root)
        self.split = split
        self.dedupe = dedupe
        if isinstance(transform, str) and transform != "default":
            raise ValueError(f"transform must be a callable, None or 'default'; got {transform!r}")
        self.uses_default_transform = isinstance(transform, str)
        self.transform = default_transform() if self.uses_default_transform else transform

        positives = list_class_files(self.root, "Positive")
        negatives = list_class_files(self.root, "Negative")
        check_names(positives + negatives)
        if bad_images == "skip":
            positives, negatives = self._drop_unreadable(positives, negatives, progress)
        pairs = interleave(positives, negatives)
        self.source_size = len(pairs)  # images in the folder, both splits
        chosen = self._choose_split(pairs, train_fraction, dedupe, progress)
        self.samples = [
            Sample(index=i, sample_id=sample_id_of(path), path=path, label=label)
            for i, (path, label) in enumerate(chosen)
        ]

    @staticmethod
    def _drop_unreadable(positives, negatives, progress):
        """Decode every file; warn once about the unreadable ones and leave them out."""
        files = positives + negatives
        bad = {path for path in tqdm(files, "Checking images", disable=not progress) if not is_readable(path)}
        if bad:
            names = ", ".join(f"{p.parent.name}/{p.name}" for p in sorted(bad)[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            warnings.warn(f"Skipped {len(bad)} unreadable image file(s): {names}{more}.")
        return [p for p in positives if p not in bad], [p for p in negatives if p not in bad]

    def _choose_split(self, pairs, train_fraction, dedupe, progress):
        """The (path, label) pairs of this split, in interleaved order."""
        cut = split_index(len(pairs), train_fraction)
        if self.split == "all":
            return pairs
        if not dedupe:
            return pairs[:cut] if self.split == "train" else pairs[cut:]
        hashes = file_hashes([path for path, _ in pairs], progress)
        first_position = {}  # hash -> position of the first file with that content
        for position, digest in enumerate(hashes):
            first_position.setdefault(digest, position)
        in_train = [first_position[digest] < cut for digest in hashes]
        wanted = self.split == "train"
        return [pair for pair, is_train in zip(pairs, in_train) if is_train == wanted]

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[idx]
        if sample.path.suffix.lower() == TENSOR_EXTENSION:
            return self._transform_tensor(load_tensor(sample.path)), sample.label
        image = load_image(sample.path, TILE_SIZE)
        if self.transform is not None:
            image = self.transform(image)
        return image, sample.label

    def _transform_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """uint8 tensors are raw pixels; float tensors are already preprocessed (capstone)."""
        if tensor.dtype == torch.uint8:
            if self.transform is None:
                return tensor.float() / 255.0
            # The same pixels as a decoded image, so the transform gets them as an image;
            # its ToTensor turns them into floats in [0, 1].
            return self.transform(to_pil_image(tensor))
        if self.transform is None or self.uses_default_transform:
            return tensor
        return self.transform(tensor)

    def content_hashes(self, progress: bool = False) -> list[str]:
        """SHA-1 of every sample's file (plumbing.files.file_hashes)."""
        return file_hashes([sample.path for sample in self.samples], progress)


# ----------------------------------------------------------------------------- leakage check
@dataclass
class LeakageReport:
    """How many validation images also sit, byte for byte, in the training split."""

    n_val: int
    n_val_in_train: int
    groups: list[list[str]]  # sample ids of each duplicate group that crosses the split
    cross_class_groups: int  # groups whose members carry both labels

    def __str__(self) -> str:
        share = 100.0 * self.n_val_in_train / self.n_val if self.n_val else 0.0
        text = (
            f"{self.n_val_in_train} of {self.n_val} validation images ({share:.1f}%) also "
            "appear, byte for byte, in the training split."
        )
        if self.cross_class_groups:
            text += f" {self.cross_class_groups} of {len(self.groups)} such groups mix both labels."
        return text


def find_split_leakage(train: CrackDataset, val: CrackDataset) -> LeakageReport:
    """Compare file contents of the two splits and report the duplicates that cross them."""
    train_hashes = train.content_hashes()
    val_hashes = val.content_hashes()
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
