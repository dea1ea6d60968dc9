"""Your own classes: images in root/<class name>/ folders (the ImageFolder layout), for notebook 06.

:class:`FolderDataset` follows the same rules as :class:`helpers.dataset.CrackDataset` (sorted
files, stable ids, RGB, 227x227, clear errors, the same `samples` list), so features, training
and analysis work on it unchanged, with as many classes as you like.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal, Sequence

import torch

from helpers.dataset import (
    SPLITS,
    DatasetNotFoundError,
    Sample,
    SampleSplit,
    default_transform,
    is_data_file,
    name_order,
    sample_id_of,
    split_index,
)
from helpers.plumbing.images import IMAGE_EXTENSIONS, TILE_SIZE, load_image


def class_folders(root: Path) -> list[str]:
    """The class names of an ImageFolder layout: the sorted names of root's visible sub-folders."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"Dataset folder {root} does not exist: expected root/<class name>/<images>.")
    names = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if len(names) < 2:
        raise DatasetNotFoundError(
            f"Dataset folder {root} has {len(names)} class folder(s) ({', '.join(names)}); "
            "a classifier needs at least 2: root/<class name>/<images>."
        )
    return names


def image_files(folder: Path) -> list[Path]:
    """The image files of one class folder, sorted by name; .DS_Store, .pt and other files are ignored."""
    files = sorted(
        (path for path in folder.iterdir() if is_data_file(path) and path.suffix.lower() in IMAGE_EXTENSIONS),
        key=name_order,
    )
    if not files:
        raise DatasetNotFoundError(
            f"Class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}): add some, or remove the folder."
        )
    return files


def take_in_turn(groups: Sequence[Sequence]) -> list:
    """One item from each group in turn: [[a1, a2], [b1], [c1, c2]] -> [a1, b1, c1, a2, c2]."""
    longest = max((len(group) for group in groups), default=0)
    return [group[i] for i in range(longest) for group in groups if i < len(group)]


class FolderDataset(SampleSplit):
    """Images in root/<class name>/ folders (the ImageFolder layout): labels 0, 1, 2... by sorted folder name.

    Your own classes, as many as you like (crack, stain, no_defect...), with the same rules as
    CrackDataset: sorted files, stable ids such as "crack/00007.jpg", RGB conversion, 227x227
    images (other sizes are resized, images above 40 megapixels refused), clear errors and the
    same `samples` list, so features and analysis work on it unchanged.
    For every class separately, the first `train_fraction` of its sorted files go to training
    and the rest to validation, so both splits keep the class balance; the chosen files are then
    taken in turn from each class (round robin), like the capstone's interleaving.

    split "train" holds the first `train_fraction` of each class's sorted files, "val" the rest,
    "all" everything. `transform` is "default" (ToTensor and ImageNet normalisation), None
    (PIL images) or any callable.
    """

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "all"] = "train",
        transform: Callable | None | Literal["default"] = "default",
        train_fraction: float = 0.75,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}; got {split!r}")
        if isinstance(transform, str) and transform != "default":
            raise ValueError(f"transform must be a callable, None or 'default'; got {transform!r}")
        self.root = Path(root)
        self.split = split
        self.uses_default_transform = isinstance(transform, str)
        self.transform = default_transform() if self.uses_default_transform else transform
        self.classes = class_folders(self.root)
        per_class, self.source_size = [], 0  # source_size: images in the folder, both splits
        for label, name in enumerate(self.classes):
            files = image_files(self.root / name)
            self.source_size += len(files)
            per_class.append([(path, label) for path in self._choose(files, train_fraction)])
        self.samples = [
            Sample(index=i, sample_id=sample_id_of(path), path=path, label=label)
            for i, (path, label) in enumerate(take_in_turn(per_class))
        ]
        if not self.samples:
            raise DatasetNotFoundError(f"The {split!r} split of {self.root} is empty: each class needs more images.")

    def _choose(self, files: list[Path], train_fraction: float) -> list[Path]:
        """This split's share of one class's sorted files."""
        cut = split_index(len(files), train_fraction)
        if self.split == "all":
            return files
        return files[:cut] if self.split == "train" else files[cut:]

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[idx]
        image = load_image(sample.path, TILE_SIZE)  # RGB, 227x227; a BadImageError names a file it cannot read
        if self.transform is not None:
            image = self.transform(image)
        return image, sample.label
