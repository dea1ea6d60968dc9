"""Every way to get the model's answers, in one place, each named after what it takes.

| function | takes | gives | notebook |
| --- | --- | --- | --- |
| :func:`logits_from_features` | a head and cached features (N, 512) | logits (N, C) | 04 |
| :func:`logits_from_loader` | a whole model and batches of images | logits (N, C) and labels (N,) | 04 |
| :func:`predict_dataset` | a whole model and a CrackDataset (and its features, if cached) | Predictions | 05 |
| :func:`classify_photos` | a whole model and photo files | a Prediction per photo | 06 |

Every one runs the model in eval mode without gradients: BatchNorm uses its stored statistics,
and nothing is learned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from helpers.dataset import default_transform
from helpers.features import FeatureSet
from helpers.plumbing.images import TILE_SIZE, BadImageError, open_photo, to_size
from helpers.settings import pick_device

CRACK = 1  # label of the "Positive" class in the binary data set


# ----------------------------------------------------------------------------- logits (notebook 04)
@torch.inference_mode()
def logits_from_features(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The head's outputs (logits) for cached features (N, 512), on the head's device. Notebook 04."""
    device = next(head.parameters()).device
    return head(features.to(device))


@torch.no_grad()
def logits_from_loader(
    model: nn.Module, loader, device: str | torch.device | None = None, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model (moved to `device`, in eval mode) over a loader of (images, labels) batches. Notebook 04.

    Returns (logits of shape (N, classes) as float32, labels of shape (N,)), both on the CPU.
    """
    device = pick_device(device)
    model.to(device)
    model.eval()
    all_logits, all_labels = [], []
    for inputs, labels in tqdm(loader, desc="predicting", leave=False, disable=not progress):
        logits = model(inputs.to(device))
        all_logits.append(logits.float().cpu())
        all_labels.append(torch.as_tensor(labels).cpu())
    if not all_logits:
        raise ValueError("The loader gave no batches: nothing to predict.")
    return torch.cat(all_logits), torch.cat(all_labels)


# ----------------------------------------------------------------------------- a data set's predictions (notebook 05)
@dataclass
class Predictions:
    """The model's class probabilities for every image of a data set, in the data set's order."""

    sample_ids: list[str]  # "Positive/00162.jpg"
    paths: list[Path]
    labels: torch.Tensor  # (N,) int64, the actual classes
    probabilities: torch.Tensor  # (N, C) float32, softmax of the logits
    class_names: list[str]  # ["Negative", "Positive"]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def crack_probability(self) -> torch.Tensor:
        """(N,) probability of class 1 ("Positive", a crack). Binary problems only."""
        if self.probabilities.shape[1] != 2:
            raise ValueError(f"crack_probability needs 2 classes, not {self.probabilities.shape[1]}.")
        return self.probabilities[:, CRACK]

    def predicted(self, threshold: float | None = None) -> torch.Tensor:
        """(N,) predicted labels: the most probable class, or (binary) crack_probability >= threshold."""
        if threshold is None:
            return self.probabilities.argmax(dim=1)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie between 0 and 1, not {threshold}")
        return (self.crack_probability >= threshold).long()


def predictions_from_logits(logits: torch.Tensor, dataset) -> Predictions:
    """Turn a model's (N, C) logits for `dataset` (a CrackDataset, same order) into Predictions."""
    if logits.dim() != 2 or len(logits) != len(dataset):
        raise ValueError(f"need logits of shape ({len(dataset)}, classes), got {tuple(logits.shape)}")
    return Predictions(
        sample_ids=[sample.sample_id for sample in dataset.samples],
        paths=[Path(sample.path) for sample in dataset.samples],
        labels=dataset.labels(),
        probabilities=torch.softmax(logits.detach().float().cpu(), dim=1),
        class_names=list(dataset.classes),
    )


def predict_dataset(
    model: nn.Module,
    dataset,
    features: FeatureSet | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 100,
    progress: bool = True,
    num_workers: int | None = None,
) -> Predictions:
    """Predictions of `model` for every image of `dataset` (a CrackDataset). Notebook 05.

    With `features` (helpers.features.extract_features for this dataset and this backbone),
    only the head runs: logits = model.fc(features), a fraction of a second. Otherwise every
    image goes through the whole network (eval mode, no gradients), as in the capstone, on
    `device` (default: helpers.model.pick_device), read by `num_workers` loader processes.
    """
    if features is not None:
        dataset_ids = [sample.sample_id for sample in dataset.samples]
        if list(features.sample_ids) != dataset_ids:
            raise ValueError(
                "These features belong to other images (their sample ids differ from the "
                "dataset's): extract them for this dataset, in this order."
            )
        model.eval()
        return predictions_from_logits(logits_from_features(model.fc, features.features).float().cpu(), dataset)
    workers = 0 if num_workers is None else num_workers
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    logits, _ = logits_from_loader(model, loader, device=device, progress=progress)
    return predictions_from_logits(logits, dataset)


# ----------------------------------------------------------------------------- photos (notebook 06)
@dataclass
class Prediction:
    """What the model says about one photo."""

    path: Path
    label: str  # the most likely class name
    probability: float  # its probability (softmax), between 0 and 1
    probabilities: dict[str, float]  # every class name -> its probability; they sum to 1

    def to_dict(self) -> dict:
        """A JSON-friendly dict: the path as a string."""
        return {**asdict(self), "path": str(self.path)}


def load_image_tensor(path: str | Path) -> torch.Tensor:
    """One photo as a normalised (3, 227, 227) tensor, ready for the model.

    The image is turned into RGB and, when it has another size, resized to 227x227: the model
    was trained on 227x227 tiles. For a large photo that loses the detail a crack needs;
    scan it tile by tile with helpers.scan instead. A missing file raises FileNotFoundError,
    a file that is not an image BadImageError; both name the file.
    """
    return default_transform()(to_size(open_photo(path), TILE_SIZE))


def classify_photos(
    model: nn.Module,
    paths: Sequence[str | Path],
    class_names: Sequence[str],
    device: torch.device | str | None = None,
    batch_size: int = 32,
    errors: list[tuple[Path, Exception]] | None = None,
) -> list[Prediction]:
    """The model's prediction for each photo file in `paths`, in the same order. Notebook 06.

    The model is put in eval mode (BatchNorm uses its learned statistics) and runs without
    gradients, `batch_size` photos at a time. A photo that cannot be read raises
    FileNotFoundError or BadImageError; given an `errors` list, it is left out instead and
    (path, error) is appended to the list.
    """
    device = pick_device(device)
    model = model.to(device).eval()
    paths = [Path(p) for p in paths]
    predictions = []
    for start in range(0, len(paths), batch_size):
        batch_paths, images = [], []
        for path in paths[start : start + batch_size]:
            try:
                images.append(load_image_tensor(path))
                batch_paths.append(path)
            except (FileNotFoundError, BadImageError) as error:
                if errors is None:
                    raise
                errors.append((path, error))
        if not images:
            continue
        with torch.no_grad():
            probabilities = torch.softmax(model(torch.stack(images).to(device)), dim=1).cpu()
        for path, row in zip(batch_paths, probabilities):
            predictions.append(_prediction(path, row, class_names))
    return predictions


def _prediction(path: Path, probabilities: torch.Tensor, class_names: Sequence[str]) -> Prediction:
    """A Prediction from one row of softmax probabilities."""
    if len(probabilities) != len(class_names):
        raise ValueError(f"The model gives {len(probabilities)} scores but {len(class_names)} class names were given.")
    best = int(probabilities.argmax())
    return Prediction(
        path=path,
        label=str(class_names[best]),
        probability=float(probabilities[best]),
        probabilities={str(name): float(p) for name, p in zip(class_names, probabilities)},
    )
