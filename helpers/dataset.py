"""The concrete crack dataset, as the IBM AI Capstone (DL0321EN) built it, with its flaws fixed.

The data are 227x227 photos of concrete in two folders, ``Positive/`` (a crack, label 1) and
``Negative/`` (no crack, label 0). Like the capstone, :class:`CrackDataset` puts positives at
even and negatives at odd positions, keeps the first 75% for training and the rest for
validation (30,000 / 10,000 on the full set). Unlike the capstone it:

* sorts the file names, so every machine gets the same split (``os.listdir`` has no order);
* gives every image a stable id such as ``"Positive/00162.jpg"``;
* turns every image into RGB and names the file when one cannot be read;
* resizes an image of another size to 227x227 (bilinear, as helpers.predict does), so a batch
  never mixes sizes, and refuses one above 40 megapixels by reading only its header;
* can keep byte-identical images on one side of the split (``dedupe=True``), because the
  dataset holds exact duplicates, and :func:`find_split_leakage` counts how many leak.

It also reads the capstone's second format: ``Positive_tensors/`` and ``Negative_tensors/``
folders of ``.pt`` files, each holding one image already preprocessed as a float tensor.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.transforms.functional import to_pil_image

from helpers.files import DIGEST_CACHE_NAME, content_hashes
from helpers.progress import tqdm

TILE_SIZE = 227  # the images' width and height, and so the input size the model learns from
MAX_IMAGE_PIXELS = 40_000_000  # larger images are refused from their header: 120 MB to decode, for one tile
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASS_NAMES = ("Negative", "Positive")  # label 0 = no crack, 1 = crack
SPLITS = ("train", "val", "all")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
TENSOR_EXTENSION = ".pt"
IGNORED_FILE_NAMES = ("thumbs.db", "desktop.ini", ".ds_store")  # compared in lower case
DOWNLOAD_HINT = (
    "Run notebooks/01_download_data.ipynb, or `python -m helpers.data download` (real data) "
    "/ `python -m helpers.data synthetic` (offline) to create it."
)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset folder, or one of its class folders, is missing or empty."""


class BadImageError(RuntimeError):
    """A file in the dataset cannot be read as an image."""


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
    files = sorted((path for path in folder.iterdir() if is_data_file(path)), key=lambda p: p.name)
    if not files:
        raise DatasetNotFoundError(f"Class folder {folder} holds no images. {DOWNLOAD_HINT}")
    return files


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


# ----------------------------------------------------------------------------- reading files
def bad_image_error(path: Path, problem: object) -> BadImageError:
    """A BadImageError that names the file and says what to do about it."""
    return BadImageError(
        f"Cannot read {path}: {problem}. Delete or replace this file, or create the dataset "
        "with bad_images='skip' to leave unreadable files out."
    )


def size_problem(size: tuple[int, int]) -> str | None:
    """Why an image of `size` (width, height) is refused, or None when it may be decoded."""
    width, height = size
    if width * height <= MAX_IMAGE_PIXELS:
        return None
    return (f"is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), more than the "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels an image may have here: shrink it, "
            f"or cut it into {TILE_SIZE}x{TILE_SIZE} tiles")


def open_image(path: Path) -> Image.Image:
    """Image.open (which reads only the header), without PIL's warning about very large images:
    size_problem refuses those with a clearer message before anything is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def load_image(path: Path, size: int | None = None) -> Image.Image:
    """Open and fully decode an image as RGB (grayscale, palette and RGBA images too).

    The width and height in the file's header are checked before any pixel is decoded: an image
    above MAX_IMAGE_PIXELS raises BadImageError. With `size`, an image of another size is resized
    to size x size (to_size, which helpers.predict.load_image_tensor uses too); one that has it
    already is returned as decoded, with no resize.
    """
    try:
        with open_image(path) as image:
            problem = size_problem(image.size)
            if problem is None:
                rgb = image.convert("RGB")
    except Exception as error:  # PIL raises several kinds of error for broken files
        raise bad_image_error(path, error) from error
    if problem is not None:
        raise BadImageError(f"{path} {problem}.")
    return rgb if size is None else to_size(rgb, size)


def to_size(image: Image.Image, size: int = TILE_SIZE) -> Image.Image:
    """`image` as size x size (bilinear), or itself when it has that size already (no resize call)."""
    return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.BILINEAR)


def load_tensor(path: Path) -> torch.Tensor:
    """Load a .pt file holding one image tensor of shape (3, H, W) or (1, H, W)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise bad_image_error(path, error) from error
    if not isinstance(data, torch.Tensor):
        raise bad_image_error(path, f"expected a tensor, found a {type(data).__name__}")
    if data.dim() != 3 or data.shape[0] not in (1, 3):
        raise bad_image_error(path, f"expected shape (3, H, W), found {tuple(data.shape)}")
    if data.dtype != torch.uint8 and not data.is_floating_point():
        raise bad_image_error(path, f"expected uint8 or float values, found {data.dtype}")
    if data.shape[0] == 1:
        data = data.repeat(3, 1, 1)  # grayscale: copy the one channel into R, G and B
    return data


def is_readable(path: Path) -> bool:
    """True when the file decodes completely as an image (or loads as an image tensor)."""
    try:
        load_tensor(path) if path.suffix.lower() == TENSOR_EXTENSION else load_image(path)
    except BadImageError:
        return False
    return True


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
        if bad_images == "skip":
            positives, negatives = self._drop_unreadable(positives, negatives, progress)
        pairs = interleave(positives, negatives)
        self.source_size = len(pairs)  # images in the folder, both splits
        chosen = self._choose_split(pairs, train_fraction, dedupe, progress)
        self.samples = [
            Sample(index=i, sample_id=f"{path.parent.name}/{path.name}", path=path, label=label)
            for i, (path, label) in enumerate(chosen)
        ]

    @staticmethod
    def _drop_unreadable(positives, negatives, progress):
        """Decode every file; warn once about the unreadable ones and leave them out."""
        files = positives + negatives
        bad = {path for path in tqdm(files, "Checking images", disable=not progress)
               if not is_readable(path)}
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
        cache_file = self.root / DIGEST_CACHE_NAME
        hashes = content_hashes([path for path, _ in pairs], cache_file, progress)
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
        """SHA-1 of every sample's file, cached in ``root/.content_hashes.json``."""
        paths = [sample.path for sample in self.samples]
        return content_hashes(paths, self.root / DIGEST_CACHE_NAME, progress)


# ----------------------------------------------------------------------------- your own classes
def class_folders(root: Path) -> list[str]:
    """The class names of an ImageFolder layout: the sorted names of root's visible sub-folders."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"Dataset folder {root} does not exist: expected root/<class name>/<images>.")
    names = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if len(names) < 2:
        raise DatasetNotFoundError(f"Dataset folder {root} has {len(names)} class folder(s) ({', '.join(names)}); "
                                   "a classifier needs at least 2: root/<class name>/<images>.")
    return names


def image_files(folder: Path) -> list[Path]:
    """The image files of one class folder, sorted by name; .DS_Store, .pt and other files are ignored."""
    files = sorted((path for path in folder.iterdir()
                    if is_data_file(path) and path.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: p.name)
    if not files:
        raise DatasetNotFoundError(f"Class folder {folder} holds no images "
                                   f"({', '.join(IMAGE_EXTENSIONS)}): add some, or remove the folder.")
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

    def __init__(self, root: str | Path, split: Literal["train", "val", "all"] = "train",
                 transform: Callable | None | Literal["default"] = "default", train_fraction: float = 0.75):
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
        self.samples = [Sample(index=i, sample_id=f"{path.parent.name}/{path.name}", path=path, label=label)
                        for i, (path, label) in enumerate(take_in_turn(per_class))]
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
