"""The model's answers, each function named after what it takes.

| function | takes | gives | notebook |
| --- | --- | --- | --- |
| :func:`logits_from_features` | a head and cached features (N, 512) | logits (N, C) | 04 |
| :func:`logits_from_loader` | a whole model and batches of images | logits (N, C) and labels (N,) | 04, 06 |
| :func:`predict_dataset` | a whole model and a CrackDataset (and its features, if cached) | Predictions | 05 |
| :func:`classify_photos` | a whole model and photo files | a Prediction per photo | 06 |
| :func:`classify_files` | photo files and a checkpoint | a Prediction per photo | 06 |

Each runs the model in eval mode without gradients: BatchNorm uses its stored statistics, and
nothing is learned. The class names come from the checkpoint, so a model trained on other
folders names its own labels. The model was trained on 227x227 tiles: a photo of another size
is resized, which loses a thin crack in a whole 4032x3024 photo; scan those tile by tile
(helpers.scan). From a terminal: ``python -m helpers predict photo.jpg`` (helpers.tools.predict).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from helpers.dataset import default_transform
from helpers.feature_cache import FeatureSet
from helpers.model import load_checkpoint
from helpers.plumbing.images import TILE_SIZE, BadImageError, open_photo, to_size
from helpers.plumbing.progress import tqdm
from helpers.plumbing.text import printable
from helpers.settings import default_checkpoint_path, pick_device
from helpers.speed import default_num_workers
from helpers.workbook import has_widget_frontend

CRACK = 1  # label of the "Positive" class in the binary data set


@torch.inference_mode()
def logits_from_features(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The head's outputs (logits) for cached features (N, 512), on the head's device."""
    return head(features.to(next(head.parameters()).device))


@torch.no_grad()
def logits_from_loader(
    model: nn.Module, loader, device: str | torch.device | None = None, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model (moved to `device`, in eval mode) over a loader of (images, labels) batches.

    Returns (logits (N, classes) as float32, labels (N,)), both on the CPU.
    """
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
    """Predictions of `model` for every image of `dataset` (a CrackDataset).

    With `features` (helpers.features.extract_features for this dataset and backbone) only the
    head runs: a fraction of a second. Otherwise every image goes through the whole network, as
    in the capstone, on `device`, read by `num_workers` loader processes.
    """
    if features is not None:
        if list(features.sample_ids) != [sample.sample_id for sample in dataset.samples]:
            raise ValueError(
                "These features belong to other images (their sample ids differ from the dataset's): "
                "extract them for this dataset, in this order."
            )
        model.eval()
        return predictions_from_logits(logits_from_features(model.fc, features.features).float().cpu(), dataset)
    workers = default_num_workers() if num_workers is None else num_workers
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    return predictions_from_logits(logits_from_loader(model, loader, device, progress)[0], dataset)


@dataclass
class Prediction:
    """What the model says about one photo."""

    path: Path
    label: str  # the most likely class name
    probability: float  # its probability (softmax), between 0 and 1
    probabilities: dict[str, float]  # every class name -> its probability; they sum to 1


def load_image_tensor(path: str | Path) -> torch.Tensor:
    """One photo as a normalised (3, 227, 227) tensor: RGB, resized to 227x227 when it has another size.

    A missing file raises FileNotFoundError, a file that is not an image BadImageError; both name the file.
    """
    return default_transform()(to_size(open_photo(path), TILE_SIZE))


@torch.no_grad()
def classify_photos(
    model: nn.Module,
    paths: Sequence[str | Path],
    class_names: Sequence[str],
    device: torch.device | str | None = None,
    batch_size: int = 32,
    errors: list[tuple[Path, Exception]] | None = None,
) -> list[Prediction]:
    """The model's prediction for each photo file in `paths`, in order, `batch_size` photos at a time.

    A photo that cannot be read raises FileNotFoundError or BadImageError, and one for which the
    model's outputs are not numbers (weights so large they overflow) ValueError. Given an `errors`
    list, such a photo is left out instead and (path, error) appended to the list.
    """
    device = pick_device(device)
    model, paths = model.to(device).eval(), [Path(path) for path in paths]
    predictions = []
    for start in range(0, len(paths), batch_size):
        read: list[tuple[Path, torch.Tensor]] = []
        for path in paths[start : start + batch_size]:
            try:
                read.append((path, load_image_tensor(path)))
            except (FileNotFoundError, BadImageError) as error:
                if errors is None:
                    raise
                errors.append((path, error))
        if not read:
            continue
        logits = model(torch.stack([image for _, image in read]).to(device)).float().cpu()
        if logits.shape[1] != len(class_names):
            raise ValueError(f"The model gives {logits.shape[1]} scores but {len(class_names)} class names were given.")
        for (path, _), row in zip(read, logits):
            if not torch.isfinite(row).all():
                error = ValueError(
                    f"{path}: the model's outputs are not numbers (its weights are so large that they overflow): "
                    "train it again with a smaller learning rate."
                )
                if errors is None:
                    raise error
                errors.append((path, error))
                continue
            probabilities = torch.softmax(row, dim=0)
            best = int(probabilities.argmax())
            named = {str(name): float(p) for name, p in zip(class_names, probabilities)}
            predictions.append(Prediction(path, str(class_names[best]), float(probabilities[best]), named))
    return predictions


def classify_files(
    paths: Sequence[str | Path],
    checkpoint: str | Path | None = None,
    errors: list[tuple[Path, Exception]] | None = None,
) -> list[Prediction]:
    """Load a workbook checkpoint (by default the one notebook 04 saves) and predict each photo (classify_photos)."""
    loaded = load_checkpoint(default_checkpoint_path() if checkpoint is None else checkpoint)
    return classify_photos(loaded.model, paths, loaded.class_names, errors=errors)


def upload_classifier(model: nn.Module, class_names: Sequence[str]):
    """A widget to classify a photo the learner uploads (JupyterLab); None, with a message, elsewhere."""
    if not has_widget_frontend():
        print(
            "The upload widget needs JupyterLab (or VS Code); call classify_files([...]) or `python -m helpers predict`."
        )
        return None
    import ipywidgets as widgets

    upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload a photo")
    output = widgets.Output()

    def classify(change) -> None:
        output.clear_output()
        for item in change["new"]:
            with tempfile.TemporaryDirectory() as folder, output:
                path = Path(folder) / Path(item["name"]).name
                path.write_bytes(bytes(item["content"]))
                try:
                    prediction = classify_photos(model, [path], class_names)[0]
                    print(f"{printable(item['name'])}: {printable(prediction.label)} ({prediction.probability:.1%})")
                except (BadImageError, ValueError) as error:
                    print(f"error: {printable(error)}")

    upload.observe(classify, names="value")
    return widgets.VBox([upload, output])
