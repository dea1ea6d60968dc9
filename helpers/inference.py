"""The trained model and its answers. Taught in notebooks 04-06; `python -m helpers predict` uses classify_files.

Each answer runs the model in eval mode without gradients (BatchNorm uses its stored statistics, nothing is
learned) and is named after what it takes: cached features, batches of images, a CrackDataset, photo files. A photo
of another size than the 227x227 tiles is resized, which loses a thin crack in a whole 4032x3024 photo: scan those
tile by tile (helpers.explorer.scan).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from helpers.dataset import default_transform
from helpers.features import FeatureSet
from helpers.model import load_checkpoint
from helpers.plumbing import TILE_SIZE, BadImageError, open_photo, to_size
from helpers.settings import default_checkpoint_path, pick_device

CRACK = 1  # label of the "Positive" class in the binary data set


@torch.inference_mode()
def logits_from_features(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The head's outputs (logits) for cached features (N, 512), on the head's device."""
    return head(features.to(next(head.parameters()).device))


@torch.no_grad()
def logits_from_loader(
    model: nn.Module, loader, device: str | torch.device | None = None, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, classes) as float32, labels (N,)) on the CPU, from the model in eval mode on `device` over a
    loader of (images, labels) batches."""
    device = pick_device(device)
    model.to(device).eval()
    logits, labels = [], []
    for inputs, targets in tqdm(loader, desc="predicting", leave=False, disable=not progress):
        logits.append(model(inputs.to(device)).float().cpu())
        labels.append(torch.as_tensor(targets).cpu())
    if not logits:
        raise ValueError("The loader gave no batches: nothing to predict.")
    return torch.cat(logits), torch.cat(labels)


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
    ids, paths = [sample.sample_id for sample in dataset.samples], [Path(sample.path) for sample in dataset.samples]
    probabilities = torch.softmax(logits.detach().float().cpu(), dim=1)
    return Predictions(ids, paths, dataset.labels(), probabilities, list(dataset.classes))


def predict_dataset(
    model: nn.Module,
    dataset,
    features: FeatureSet | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 100,
    progress: bool = True,
) -> Predictions:
    """Predictions of `model` for every image of `dataset` (a CrackDataset). With its `features` (extract_features)
    only the head runs; otherwise every image goes through the whole network, as in the capstone."""
    if features is not None:
        if list(features.sample_ids) != [sample.sample_id for sample in dataset.samples]:
            raise ValueError("These features are other images' (other sample ids): extract them for this dataset.")
        model.eval()
        return predictions_from_logits(logits_from_features(model.fc, features.features).float().cpu(), dataset)
    loader = DataLoader(dataset, batch_size=batch_size)
    return predictions_from_logits(logits_from_loader(model, loader, device, progress)[0], dataset)


@dataclass
class Prediction:
    """What the model says about one photo."""

    path: Path
    label: str  # the most likely class name
    probability: float  # its probability (softmax), between 0 and 1
    probabilities: dict[str, float]  # every class name -> its probability; they sum to 1


def load_image_tensor(path: str | Path) -> torch.Tensor:
    """One photo as a normalised (3, 227, 227) tensor, resized when it has another size (FileNotFoundError and
    BadImageError name the file)."""
    return default_transform()(to_size(open_photo(path), TILE_SIZE))


@torch.no_grad()
def classify_photos(
    model: nn.Module,
    paths: Sequence[str | Path],
    class_names: Sequence[str],
    device: torch.device | str | None = None,
    errors: list[tuple[Path, Exception]] | None = None,
) -> list[Prediction]:
    """The model's prediction for each photo file in `paths`, in order. A photo that cannot be read raises
    FileNotFoundError or BadImageError, one the model gives no numbers for (its weights overflow) ValueError;
    given an `errors` list, such a photo is left out instead and (path, error) appended to the list."""
    device = pick_device(device)
    model, predictions = model.to(device).eval(), []
    for path in map(Path, paths):
        try:
            logits = model(load_image_tensor(path)[None].to(device))[0].float().cpu()
            if not torch.isfinite(logits).all():
                why = "the model's outputs are not numbers (weights so large that they overflow)"
                raise ValueError(f"{path}: {why}: train it again with a smaller learning rate.")
        except (FileNotFoundError, BadImageError, ValueError) as error:
            if errors is None:
                raise
            errors.append((path, error))
            continue
        probabilities = torch.softmax(logits, dim=0).tolist()
        best = probabilities.index(max(probabilities))
        named = dict(zip(map(str, class_names), probabilities, strict=True))
        predictions.append(Prediction(path, str(class_names[best]), probabilities[best], named))
    return predictions


def classify_files(
    paths: Sequence[str | Path],
    checkpoint: str | Path | None = None,
    errors: list[tuple[Path, Exception]] | None = None,
) -> list[Prediction]:
    """Load a workbook checkpoint (by default the one notebook 04 saves) and predict each photo (classify_photos)."""
    loaded = load_checkpoint(default_checkpoint_path() if checkpoint is None else checkpoint)
    return classify_photos(loaded.model, paths, loaded.class_names, errors=errors)
