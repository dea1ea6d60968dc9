"""Use a trained model on new photos: from Python, or from the command line.

Training ends with a checkpoint (notebook 04). This module is the other end: it loads that
checkpoint and says, for each photo you give it, which class the model picks and how sure it
is. The class names come from the checkpoint itself, so a model trained on other folders
(or on three classes) names its own labels; nothing here assumes "Negative"/"Positive".

From the command line: ``python -m helpers predict photo1.jpg --json`` (helpers.tools.predict).

The model was trained on 227x227 tiles. A photo of another size is resized to 227x227, which
is right for a tile-sized crop but not for a whole 4032x3024 photo: a thin crack shrunk 18
times disappears. Scan a large photo tile by tile instead (helpers.scan).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torch import nn

from helpers.dataset import default_transform
from helpers.plumbing.images import TILE_SIZE, BadImageError, open_image, size_problem, to_size
from helpers.model import load_checkpoint
from helpers.plumbing.text import printable
from helpers.settings import default_checkpoint_path, pick_device
from helpers.workbook import has_widget_frontend


@dataclass
class Prediction:
    """What the model says about one photo."""

    path: Path
    label: str                       # the most likely class name
    probability: float               # its probability (softmax), between 0 and 1
    probabilities: dict[str, float]  # every class name -> its probability; they sum to 1

    def to_dict(self) -> dict:
        """A JSON-friendly dict: the path as a string."""
        return {**asdict(self), "path": str(self.path)}


def open_photo(path: str | Path) -> Image.Image:
    """The photo at `path`, fully decoded, as an RGB image.

    A missing file raises FileNotFoundError, a file that is not an image (or is truncated)
    BadImageError; both messages start with the file: "photo.jpg: <reason>."
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    try:
        with open_image(path) as opened:  # the header only: an enormous image is refused before decoding
            problem = size_problem(opened.size)
            if problem is None:
                return opened.convert("RGB")  # also decodes the whole file, so damage shows here
    except Exception as error:  # PIL raises several kinds of error for broken files
        reason = (str(error).splitlines() or [""])[0].replace(repr(str(path)), "").strip(" :")
        raise BadImageError(f"{path}: not readable as an image ({reason or type(error).__name__}).") from error
    raise BadImageError(f"{path}: {problem}.")


def load_image_tensor(path: str | Path) -> torch.Tensor:
    """One photo as a normalised (3, 227, 227) tensor, ready for the model.

    The image is turned into RGB and, when it has another size, resized to 227x227: the model
    was trained on 227x227 tiles. For a large photo that loses the detail a crack needs;
    scan it tile by tile with helpers.scan instead. A missing file raises FileNotFoundError,
    a file that is not an image BadImageError; both name the file.
    """
    return default_transform()(to_size(open_photo(path), TILE_SIZE))


def classify_images(model: nn.Module, paths: Sequence[str | Path], class_names: Sequence[str],
                   device: torch.device | str | None = None, batch_size: int = 32,
                   errors: list[tuple[Path, Exception]] | None = None) -> list[Prediction]:
    """The model's prediction for each photo in `paths`, in the same order.

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
        for path in paths[start:start + batch_size]:
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
    return Prediction(path=path, label=str(class_names[best]), probability=float(probabilities[best]),
                      probabilities={str(name): float(p) for name, p in zip(class_names, probabilities)})


def upload_classifier(model: nn.Module, class_names: Sequence[str]):
    """A widget to classify a photo the learner uploads (JupyterLab); None, with a message, elsewhere."""
    if not has_widget_frontend():
        print("The upload widget needs JupyterLab (or Jupyter Notebook / VS Code); "
              "call classify_files([...], checkpoint) or `python -m helpers predict` instead.")
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
                    prediction = classify_images(model, [path], class_names)[0]
                    print(f"{printable(item['name'])}: {printable(prediction.label)} "
                          f"({prediction.probability:.1%})")
                except (BadImageError, FileNotFoundError) as error:
                    print(f"error: {printable(error)}")

    upload.observe(classify, names="value")
    return widgets.VBox([upload, output])


def load_model(checkpoint: str | Path | None = None) -> tuple[nn.Module, list[str]]:
    """(model, class names) from a workbook checkpoint; by default the one notebook 04 saves.

    A missing file raises FileNotFoundError; a file that is not a workbook checkpoint (damaged,
    of the wrong kind, or not fitting a ResNet18) raises CheckpointMismatchError.
    """
    path = default_checkpoint_path() if checkpoint is None else Path(checkpoint)
    model, info = load_checkpoint(path)  # checks the file, its classes and its weights
    return model, list(info["class_names"])


def classify_files(paths: Sequence[str | Path], checkpoint: str | Path | None = None) -> list[Prediction]:
    """Load the checkpoint (default_checkpoint_path() when None) and predict each photo."""
    model, class_names = load_model(checkpoint)
    return classify_images(model, paths, class_names)


def format_prediction(prediction: Prediction) -> str:
    """One line for a person: "photo.jpg: Positive (97.3%)", without control characters."""
    return f"{printable(prediction.path)}: {printable(prediction.label)} ({100 * prediction.probability:.1f}%)"
